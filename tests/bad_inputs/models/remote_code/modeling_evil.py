raise SystemExit('custom code ran')  # must never be imported without the flag
