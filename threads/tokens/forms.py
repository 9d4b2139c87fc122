"""The form that names a new API token."""

from django import forms

from ..models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(max_length=ApiToken._meta.get_field("name").max_length, help_text="Where you will use it.")
