"""kexectest: does the BIOS still work after kexec?

Data flows one way: payload -> serial bytes -> trace events -> analysis -> report.
"""

__version__ = "0.1.0"
