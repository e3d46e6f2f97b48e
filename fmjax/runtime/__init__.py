"""How fmjax runs: errors, paths, console, version workarounds, processes and devices, lookup by name, report pages."""
