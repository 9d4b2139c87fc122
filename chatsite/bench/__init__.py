"""`manage.py streambench`: the streaming path measured end to end on a real topology (issue 8).

The command starts the topology as processes on loopback (topology.py) on storage of its
own, seeds it (tasks.py, in a Django child process with the servers' environment), and
drives it with real WebSocket clients in one or two client processes (client.py, probes.py).
Replies come from BenchProvider (provider.py): the scripted provider's pace, but each token
carries its emit time (stamps.py), so token-to-screen latency is read per token by the
client without any change to the protocol. With `--provider anthropic` the workers run the
Anthropic provider instead, reading the same replies from a stand-in of the API
(model_api.py). Phases (phases.py, capacity.py) each add a part of the report; report.py
checks it against the issue's targets and prints it.
"""
