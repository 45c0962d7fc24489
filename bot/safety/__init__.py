"""Defences against hostile input and leaks: untrusted text, linear-time regexes, bounded
YAML, secret redaction."""
