"""Shared helpers for the pynetdicom peers (imported by pn_*.py; not run alone).

Every peer prints one JSON document on stdout; diagnostics go to stderr
(set PN_DEBUG=1 for pynetdicom's debug log)."""

import json
import os
import sys
import time

from pynetdicom import AE, debug_logger

if os.environ.get("PN_DEBUG"):
    debug_logger()


def spec():
    """The JSON spec passed as the last command-line argument."""
    return json.loads(sys.argv[-1])


def emit(document):
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def new_ae(title):
    ae = AE(ae_title=title)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    return ae


def status_of(ds):
    """The Status of a response data set, or None when there was none (timeout, abort)."""
    if ds is None or "Status" not in ds:
        return None
    return int(ds.Status)


def counts_of(ds):
    """Sub-operation counts of a C-MOVE/C-GET response."""
    out = {}
    for key in ("Remaining", "Completed", "Failed", "Warning"):
        keyword = f"NumberOf{key}Suboperations"
        out[key.lower()] = int(getattr(ds, keyword)) if ds is not None and keyword in ds else None
    return out


def comment_of(ds):
    return str(ds.ErrorComment) if ds is not None and "ErrorComment" in ds else None


def wait_until(condition, seconds):
    """Poll `condition` until it holds or `seconds` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
