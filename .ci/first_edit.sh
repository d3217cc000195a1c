#!/usr/bin/env bash
# The README's first edit, as a newcomer runs it (the installed console script, any folder), checked:
# it succeeds, writes its pictures, and prints only pbw's own lines (no Lightning tips or warnings).
set -euo pipefail
pbw-edit --config edit/mini.yaml --prompt "a bird with a red body" --mask part:body --out out/first > first_edit.log 2>&1 || {
    cat first_edit.log
    exit 1
}
cat first_edit.log
test -s out/first/comparison.png && test -s out/first/edited.png && test -s out/first/metrics.json
if grep -nE "litlogger|LeafSpec|Deprecat|UserWarning|Epoch [0-9]|💡|Tip:" first_edit.log; then
    echo "the first edit printed lines that are not pbw's (above)" >&2
    exit 1
fi
