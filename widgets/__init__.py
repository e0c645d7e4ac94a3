"""Front-end ES modules of sora_nb's custom widgets (installed as ``sora_nb._frontend``); see README.md."""
