"""The demo account of a local debug run: `manage.py demouser` makes it, the sign-in page offers it."""

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
