"""Unit tests of tools/execute_job.py (run by scripts/test):
python3 -m unittest discover -s tools -p 'test_*.py'

The inputs are what snowflake-cli 3.30.0 prints with --format json (and on
stderr when a statement fails), taken from runs against
tests/peers/fake_snowflake.py."""

import contextlib
import io
import os
import tempfile
import unittest

import execute_job
from execute_job import BadOutput

# SHOW JOB SERVICES ... ->> SELECT "status", "created_on" ...; SHOW SERVICE
# CONTAINERS IN SERVICE ...: two statements, so a list of two results.
STATE = """[
  [
    {
      "status"  :   "FAILED"  ,
      "created_on"  :   "2026-12-03T00:26:17.755503+00:00"
    }
  ],
  [
    {
      "database_name"  :   "A"  ,
      "schema_name"  :   "B"  ,
      "service_name"  :   "JOB"  ,
      "instance_id"  :   1  ,
      "container_name"  :   "main"  ,
      "status"  :   "FAILED"  ,
      "message"  :   "Encountered fatal error while running, check container logs"  ,
      "image_name"  :   "/a/b/c/d:e"  ,
      "last_exit_code"  :   76
    }  ,
    {
      "database_name"  :   "A"  ,
      "schema_name"  :   "B"  ,
      "service_name"  :   "JOB"  ,
      "instance_id"  :   0  ,
      "container_name"  :   "main"  ,
      "status"  :   "DONE"  ,
      "message"  :   "Completed successfully"  ,
      "image_name"  :   "/a/b/c/d:e"  ,
      "last_exit_code"  :   0
    }
  ]
]
"""

# The same check alone, before a run: one statement, so a list of rows.
CHECK_NONE = "[]\n"
CHECK_DONE = '[\n    {\n        "status": "DONE",\n        "created_on": "2026-12-03T00:26:17.755503+00:00"\n    }\n]\n'

NODE_LOG = """[
    {
        "SYSTEM$GET_SERVICE_LOGS('A.B.JOB', 0, 'MAIN')": "service-to-service [2026-12-03 00:26:17,768] [INFO] Calling http://127.0.0.1:18999/echo with input Hello\\nservice-to-service [2026-12-03 00:26:17,770] [INFO] Received response from http://127.0.0.1:18999/echo: Bob said Hello\\n"
    }
]
"""
EMPTY_NODE_LOG = """[
    {
        "SYSTEM$GET_SERVICE_LOGS('A.B.JOB', 2, 'MAIN')": ""
    }
]
"""
RECLAIMED = """\
╭─ Error ──────────────────────────────────────────────────────────────────────╮
│ 391906 (22000): 610d955d-0b60-4005-a2fd-c17b26fa7461: Container 'main' of    │
│ instance 1 of service A.B.JOB is not available: its compute pool node was    │
│ released.                                                                    │
╰──────────────────────────────────────────────────────────────────────────────╯
"""
NO_EVENT_TABLE = """\
╭─ Error ──────────────────────────────────────────────────────────────────────╮
│ 391930 (22000): 77736bd9-4d61-4739-a60c-131a1fe4f048: SQL execution error:   │
│ this account has no event table (its EVENT_TABLE parameter is not set).      │
╰──────────────────────────────────────────────────────────────────────────────╯
"""

EVENT_LOGS = """[
    {
        "TIMESTAMP": "2026-12-03T00:26:17.769035",
        "INSTANCE_ID": 1,
        "CONTAINER_NAME": "main",
        "LOG": "service-to-service [2026-12-03 00:26:17,768] [INFO] Calling http://x/echo with input Hello"
    },
    {
        "TIMESTAMP": "2026-12-03T00:26:17.769500",
        "INSTANCE_ID": 2,
        "CONTAINER_NAME": "main",
        "LOG": "service-to-service [2026-12-03 00:26:17,769] [ERROR] no echo today"
    },
    {
        "TIMESTAMP": "2026-12-03T00:26:17.770355",
        "INSTANCE_ID": 1,
        "CONTAINER_NAME": "main",
        "LOG": "service-to-service [2026-12-03 00:26:17,770] [INFO] Received response from http://x/echo: Bob said Hello"
    }
]
"""

EVENTS = """[
    {
        "TIMESTAMP": "2026-12-03T00:26:17.755931",
        "INSTANCE_ID": 2,
        "CONTAINER_NAME": "main",
        "SEVERITY": "INFO",
        "EVENT_NAME": "CONTAINER.STATUS_CHANGE",
        "EVENT_DETAILS": "{\\"status\\": \\"RUNNING\\", \\"message\\": \\"Running\\"}"
    },
    {
        "TIMESTAMP": "2026-12-03T00:26:17.772191",
        "INSTANCE_ID": 2,
        "CONTAINER_NAME": "main",
        "SEVERITY": "ERROR",
        "EVENT_NAME": "CONTAINER.STATUS_CHANGE",
        "EVENT_DETAILS": "{\\"status\\": \\"FAILED\\", \\"message\\": \\"Container exited with code 76\\"}"
    }
]
"""

PARAMETER = """[
    {
        "key": "EVENT_TABLE",
        "value": "%s",
        "default": "",
        "level": "ACCOUNT",
        "description": "Event table for logs and traces.",
        "type": "STRING"
    }
]
"""

JOB = "a.b.job"


class Files:
    """A directory of one run's snow outputs, as scripts/execute-job keeps them."""

    def __init__(self, test):
        scratch = tempfile.TemporaryDirectory(prefix="execute-job-test-")
        test.addCleanup(scratch.cleanup)
        self.dir = scratch.name

    def call(self, name, out="", err="", failed=False):
        for suffix, content in ((".json", out), (".err", err)):
            with open(os.path.join(self.dir, name + suffix), "w", encoding="utf-8") as f:
                f.write(content)
        if failed:
            open(os.path.join(self.dir, name + ".failed"), "w").close()
        return os.path.join(self.dir, name + ".json")


def report(files, pairs, status="FAILED"):
    """(stdout, stderr) of a report, as the script's terminal shows them."""
    lines = execute_job.report(files.dir, JOB, status, "scripts/execute-job", pairs)
    out = "".join(text for stream, text in lines if stream == "out")
    err = "".join(text for stream, text in lines if stream == "err")
    return out, err


class JobState(unittest.TestCase):
    def test_status_and_start_of_a_job_from_either_output(self):
        files = Files(self)
        state = files.call("state", STATE)
        self.assertEqual(execute_job.status(state), "FAILED")
        self.assertEqual(execute_job.created_on(state), "2026-12-03T00:26:17.755503+00:00")
        self.assertEqual(execute_job.status(files.call("check", CHECK_DONE)), "DONE")
        self.assertEqual(execute_job.status(files.call("none", CHECK_NONE)), "")
        self.assertEqual(execute_job.created_on(files.call("none", CHECK_NONE)), "")

    def test_a_start_time_that_is_not_iso_8601_is_left_out(self):
        files = Files(self)
        odd = files.call("odd", '[{"status": "DONE", "created_on": "Tue, 3 Dec 2026 00:26:17 -0800"}]')
        self.assertEqual(execute_job.created_on(odd), "")
        # Re-rendered, never passed through: nothing but the timestamp
        # reaches the SQL.
        quoted = files.call("quoted", '[{"status": "DONE", "created_on": "2026-12-03\'); DROP TABLE t; --"}]')
        self.assertEqual(execute_job.created_on(quoted), "")

    def test_what_is_not_snows_output_fails_in_one_message(self):
        files = Files(self)
        for content in ("| status |\n| DONE |\n", "{}", "[1, 2]", '[{"status": "done; rm"}]', '[[{"status": "DONE"}], {}]'):
            with self.assertRaises(BadOutput, msg=content):
                execute_job.status(files.call("bad", content))

    def test_containers_as_a_table_in_instance_order(self):
        files = Files(self)
        table = execute_job.containers(files.call("state", STATE))
        self.assertEqual(
            table,
            "instance  container  status  message                                                      exit code\n"
            "0         main       DONE    Completed successfully                                       0\n"
            "1         main       FAILED  Encountered fatal error while running, check container logs  76\n",
        )
        self.assertEqual(execute_job.instances(files.call("state", STATE)), "0 main\n1 main\n")

    def test_a_listing_without_exit_codes_has_no_such_column(self):
        files = Files(self)
        rows = '[[{"status": "RUNNING"}], [{"instance_id": "0", "container_name": "main", "status": "READY", "message": "Running"}]]'
        self.assertEqual(
            execute_job.containers(files.call("state", rows)),
            "instance  container  status  message\n0         main       READY   Running\n",
        )

    def test_names_that_would_not_be_safe_in_sql_are_refused(self):
        files = Files(self)
        for row in (
            '{"instance_id": 0, "container_name": "main\'); DROP"}',
            '{"instance_id": "0 1", "container_name": "main"}',
            '{"instance_id": -1, "container_name": "main"}',
            '{"instance_id": true, "container_name": "main"}',
        ):
            with self.assertRaises(BadOutput, msg=row):
                execute_job.instances(files.call("state", f'[[], [{row}]]'))
        with self.assertRaises(ValueError):
            execute_job.parse_pair("0 Main")


class SnowsErrors(unittest.TestCase):
    def test_the_box_becomes_one_line(self):
        files = Files(self)
        files.call("x", err=RECLAIMED, failed=True)
        self.assertEqual(
            execute_job.error(os.path.join(files.dir, "x.err")),
            "391906 (22000): 610d955d-0b60-4005-a2fd-c17b26fa7461: Container 'main' of instance 1 "
            "of service A.B.JOB is not available: its compute pool node was released.",
        )

    def test_without_a_box_the_text_is_kept_and_without_text_it_says_so(self):
        files = Files(self)
        files.call("x", err="Connection refused\n  while connecting\n", failed=True)
        self.assertEqual(execute_job.error(os.path.join(files.dir, "x.err")), "Connection refused while connecting")
        files.call("y", failed=True)
        self.assertEqual(execute_job.error(os.path.join(files.dir, "y.err")), "snow failed without a message")

    def test_the_event_table_parameter(self):
        files = Files(self)
        self.assertEqual(execute_job.event_table(files.call("p", PARAMETER % "SNOWFLAKE.TELEMETRY.EVENTS")), "SNOWFLAKE.TELEMETRY.EVENTS")
        self.assertEqual(execute_job.event_table(files.call("p", PARAMETER % "")), "")
        self.assertEqual(execute_job.event_table(files.call("p", PARAMETER % "NONE")), "")
        self.assertEqual(execute_job.event_table(files.call("p", "[]")), "")


class EventDetails(unittest.TestCase):
    def test_the_message_of_an_object_given_as_json_text_or_as_an_object(self):
        self.assertEqual(execute_job.details('{"status": "FAILED", "message": "Container exited\\nwith code 76"}'), "Container exited with code 76")
        self.assertEqual(execute_job.details({"message": "OOMKilled"}), "OOMKilled")
        self.assertEqual(execute_job.details('{"status": "FAILED"}'), '{"status":"FAILED"}')
        self.assertEqual(execute_job.details("not json"), "not json")
        self.assertEqual(execute_job.details(None), "")


class Report(unittest.TestCase):
    def test_each_instance_from_its_node_or_the_event_table_in_order(self):
        files = Files(self)
        files.call("node-0-main", NODE_LOG)
        files.call("node-1-main", err=RECLAIMED, failed=True)
        files.call("node-2-main", EMPTY_NODE_LOG)
        pairs = [(0, "main"), (1, "main"), (2, "main")]
        self.assertEqual(execute_job.missing(files.dir, pairs), "1, 2")
        files.call("event-logs", EVENT_LOGS)
        files.call("events", EVENTS)
        out, err = report(files, pairs)
        self.assertEqual(
            out,
            "service-to-service [2026-12-03 00:26:17,768] [INFO] Calling http://127.0.0.1:18999/echo with input Hello\n"
            "service-to-service [2026-12-03 00:26:17,770] [INFO] Received response from http://127.0.0.1:18999/echo: Bob said Hello\n"
            "service-to-service [2026-12-03 00:26:17,768] [INFO] Calling http://x/echo with input Hello\n"
            "service-to-service [2026-12-03 00:26:17,770] [INFO] Received response from http://x/echo: Bob said Hello\n"
            "service-to-service [2026-12-03 00:26:17,769] [ERROR] no echo today\n"
            "2026-12-03T00:26:17.755931 instance 2, container main: INFO CONTAINER.STATUS_CHANGE: Running\n"
            "2026-12-03T00:26:17.772191 instance 2, container main: ERROR CONTAINER.STATUS_CHANGE: Container exited with code 76\n",
        )
        self.assertEqual(
            err.splitlines(),
            [
                "scripts/execute-job: instance 0, container main: the node's log (SYSTEM$GET_SERVICE_LOGS)",
                "scripts/execute-job: instance 1, container main: 2 lines from the event table (a.b.job!SPCS_GET_LOGS), "
                "as the node's log could not be read (391906 (22000): 610d955d-0b60-4005-a2fd-c17b26fa7461: Container "
                "'main' of instance 1 of service A.B.JOB is not available: its compute pool node was released.)",
                "scripts/execute-job: instance 2, container main: 1 line from the event table (a.b.job!SPCS_GET_LOGS), "
                "as the node's log was empty",
                "scripts/execute-job: a.b.job is FAILED; its platform events (a.b.job!SPCS_GET_EVENTS):",
            ],
        )

    def test_an_instance_the_event_table_has_no_lines_for_says_why_that_may_be(self):
        files = Files(self)
        files.call("node-0-main", EMPTY_NODE_LOG)
        files.call("event-logs", "[]\n")
        out, err = report(files, [(0, "main")], "DONE")
        self.assertEqual(out, "")
        self.assertIn("instance 0, container main: no log: the node's log was empty, and the event table has no lines for it either", err)
        self.assertIn("logExporters.eventTableConfig.logLevel: INFO", err)
        self.assertEqual(len(err.splitlines()), 1)

    def test_without_an_event_table_one_line_says_so_and_how_to_set_one(self):
        files = Files(self)
        files.call("node-0-main", EMPTY_NODE_LOG)
        files.call("event-logs", err=NO_EVENT_TABLE, failed=True)
        files.call("event-table", PARAMETER % "")
        out, err = report(files, [(0, "main")])
        self.assertEqual(out, "")
        self.assertEqual(
            err.splitlines(),
            [
                "scripts/execute-job: instance 0, container main: no log: the node's log was empty, and the event table could not be read",
                "scripts/execute-job: this account has no event table (EVENT_TABLE is unset), so the log of a reclaimed "
                "node and the platform events cannot be read; an ACCOUNTADMIN can set one: "
                "ALTER ACCOUNT SET EVENT_TABLE = SNOWFLAKE.TELEMETRY.EVENTS",
            ],
        )

    def test_another_event_table_failure_is_snows_message_on_one_line(self):
        files = Files(self)
        files.call("node-0-main", NODE_LOG)
        files.call("events", err=RECLAIMED, failed=True)
        files.call("event-table", PARAMETER % "SNOWFLAKE.TELEMETRY.EVENTS")
        out, err = report(files, [(0, "main")])
        self.assertIn("Bob said Hello", out)
        self.assertEqual(
            err.splitlines()[-1],
            "scripts/execute-job: could not read the event table: 391906 (22000): 610d955d-0b60-4005-a2fd-c17b26fa7461: "
            "Container 'main' of instance 1 of service A.B.JOB is not available: its compute pool node was released.",
        )

    def test_no_events_and_events_without_an_instance(self):
        files = Files(self)
        files.call("node-0-main", NODE_LOG)
        files.call("events", "[]")
        _, err = report(files, [(0, "main")], "RUNNING")
        self.assertEqual(
            err.splitlines()[-1],
            "scripts/execute-job: a.b.job is RUNNING, and the event table has no platform events for it",
        )
        files.call("events", '[{"TIMESTAMP": "t", "INSTANCE_ID": null, "CONTAINER_NAME": null, "SEVERITY": "WARN", "EVENT_NAME": "X", "EVENT_DETAILS": null}]')
        out, _ = report(files, [(0, "main")], "PENDING")
        self.assertTrue(out.endswith("t the job: WARN X\n"), out)


class CommandLine(unittest.TestCase):
    def run_main(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = execute_job.main(["execute_job.py", *args])
        return code, out.getvalue(), err.getvalue()

    def test_values_print_one_line_or_nothing(self):
        files = Files(self)
        state = files.call("state", STATE)
        self.assertEqual(self.run_main("status", state), (0, "FAILED\n", ""))
        self.assertEqual(self.run_main("status", files.call("none", CHECK_NONE)), (0, "", ""))
        self.assertEqual(self.run_main("instances", state), (0, "0 main\n1 main\n", ""))

    def test_report_writes_logs_to_stdout_and_their_sources_to_stderr(self):
        files = Files(self)
        files.call("node-0-main", NODE_LOG)
        code, out, err = self.run_main("report", files.dir, "--job", JOB, "--status", "DONE", "--prefix", "p", "0 main")
        self.assertEqual(code, 0)
        self.assertIn("Bob said Hello", out)
        self.assertEqual(err, "p: instance 0, container main: the node's log (SYSTEM$GET_SERVICE_LOGS)\n")

    def test_bad_input_is_one_line_and_a_bad_command_line_exit_2(self):
        files = Files(self)
        code, out, err = self.run_main("status", files.call("bad", "Error: not JSON"))
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("is not snow's JSON output", err)
        for args in ((), ("bogus",), ("status",), ("report", files.dir), ("missing", files.dir, "x main")):
            code, _, err = self.run_main(*args)
            self.assertEqual(code, 2, args)
            self.assertEqual(len(err.splitlines()), 1, err)


if __name__ == "__main__":
    unittest.main()
