"""The upstream test suite's test_task (specs/iscep.md §6.4) as an iscepd command: the
arguments arrive as one JSON object on standard input, the answer is one JSON object."""
import json
import sys

a = json.load(sys.stdin)
print(json.dumps({"message": "echo " + a["message"], "numb": a["numb"]}))
