# rmas: runs a LiveCodeBench functional candidate against its cases, inside the python sandbox,
# with the outcomes the reference's isolated functional runner reports (docs/eval.md). The job is
# spliced in below as one JSON text; the result is the one JSON line this prints last.
import json
import signal
from types import ModuleType

JOB = json.loads(RMAS_JOB_JSON)


class RunnerTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise RunnerTimeout("Execution timed out")


def cut(text, limit):
    text = str(text or "")
    return text if limit <= 0 or len(text) <= limit else text[:limit] + "\n...<truncated>..."


def report(passed, index, error, detail):
    outcome = {
        "all_passed": error is None,
        "passed_tests": passed,
        "total_tests": len(JOB["inputs"]),
        "failed_test_index": index,
        "error_type": error,
        "detail": detail,
    }
    print(json.dumps(outcome, ensure_ascii=False))


def main():
    inputs, outputs, limit = JOB["inputs"], JOB["outputs"], JOB["timeout_s"]
    first = 0 if inputs else None
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.alarm(limit)
        module = ModuleType("candidate", "")
        exec(JOB["source"], module.__dict__)
        signal.alarm(0)
        solution = "class Solution" in JOB["source"] and hasattr(module, "Solution")
        target = module.Solution() if solution else module
    except RunnerTimeout:
        signal.alarm(0)
        return report(0, first, "TLE", "compile timeout")
    except Exception as exc:
        signal.alarm(0)
        return report(0, first, "CE/RE", repr(exc))
    method = getattr(target, JOB["fn_name"], None)
    if method is None:
        return report(0, first, "NO_FUNC", "Required callable `%s` not found" % JOB["fn_name"])
    passed = 0
    for index, (raw_in, raw_out) in enumerate(zip(inputs, outputs)):
        try:
            args = [json.loads(line) for line in str(raw_in).split("\n") if str(line).strip() != ""]
            expected = json.loads(raw_out)
        except Exception as exc:
            return report(passed, index, "BAD_TEST_FORMAT", repr(exc))
        try:
            signal.alarm(limit)
            got = method(*args)
            signal.alarm(0)
        except RunnerTimeout:
            signal.alarm(0)
            return report(passed, index, "TLE", "function timeout")
        except Exception as exc:
            signal.alarm(0)
            return report(passed, index, "RE", repr(exc))
        if isinstance(got, tuple):
            got = list(got)
        if got != expected:
            shown = {"input_args": cut(str(args), 400), "expected": cut(str(expected), 400), "prediction": cut(str(got), 400)}
            return report(passed, index, "WA", json.dumps(shown, ensure_ascii=False))
        passed += 1
    report(passed, None, None, "OK")


main()
