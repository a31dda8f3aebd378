"""The analysis: Lines of one capture -> an Analysis (verdict, steps, hang, kernel trouble,
damage, findings, before/after, signature).  `analyze_capture`, `analyze_log` and
`analyze_bytes` (replay.py) are the entries; core.py runs the stages (assemble, steps, handoff,
location, verdict, timing); decoders/ hold one decoder per BIOS call, by concern."""
