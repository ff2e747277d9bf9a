"""QIDO-RS against a server whose answers are capped ([http] qido_max_results):
dicomweb-client gets the first page and the PS3.18 Warning, and with
get_remaining=True pages through everything by offset.

argv: SPEC_JSON {"url": DICOMweb root, "token": ..., "files": [test file names]}
prints {"stored": n, "first_page": n, "warning": text, "remaining": n,
        "remaining_distinct": n, "within_limit_warning": text}"""

import sys

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import authorized_session, client, emit, spec, stow_broad_set


def main():
    options = spec()
    dw = client(options["url"])
    stored = stow_broad_set(dw, options["files"])
    first_page = dw.search_for_instances()
    remaining = dw.search_for_instances(get_remaining=True)
    http = authorized_session()
    accept = {"Accept": "application/dicom+json"}
    capped = http.get(options["url"] + "/instances", headers=accept, timeout=60)
    within = http.get(options["url"] + "/instances", params={"limit": "2"}, headers=accept, timeout=60)
    emit({
        "stored": len(stored),
        "first_page": len(first_page),
        "warning": capped.headers.get("Warning", ""),
        "remaining": len(remaining),
        "remaining_distinct": len({m["00080018"]["Value"][0] for m in remaining}),
        "within_limit": len(within.json()),
        "within_limit_warning": within.headers.get("Warning", ""),
    })


if __name__ == "__main__":
    main()
