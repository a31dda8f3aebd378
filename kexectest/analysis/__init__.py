"""The analysis: Lines of one capture -> an Analysis (verdict, steps, hang, kernel trouble,
findings, before/after, signature).  `analyze_capture` and `analyze_log` (replay.py) are the
entries; decoders/ hold one decoder per BIOS call, by concern."""
