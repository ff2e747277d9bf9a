"""Send Part 10 files with C-STORE exactly as encoded: pynetdicom streams each
file's data set bytes (everything after the file meta group) unchanged, on a
presentation context proposing only that file's own transfer syntax.

argv: HOST PORT SPEC_JSON {"calling_ae": str, "files": [path, ...], "select": bool}
With "select", files that pydicom cannot read, that have no storage SOP class
or that pynetdicom cannot send unchanged (no file meta UIDs) are skipped.
"doubts" lists why a server could rightly refuse a file (pydicom warnings while
reading, truncated elements, missing or inconsistent UIDs); empty means well formed.
prints {"results": [{"path", "offset", "sop_class", "sop_uid", "study_uid", "transfer_syntax",
                     "status", "comment", "error", "skipped", "doubts"}]}"""

import sys
import warnings
from pathlib import Path

from pydicom import dcmread
from pynetdicom import _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import comment_of, emit, new_ae, spec, status_of

_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 100


def truncated_elements(ds):
    """Top-level elements whose value is shorter than their length field."""
    short = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        value, length = getattr(raw, "value", None), getattr(raw, "length", None)
        if isinstance(value, (bytes, bytearray)) and length not in (None, 0xFFFFFFFF) and len(value) != length:
            short.append(str(tag))
    return short


def doubts_about(ds, meta):
    """Why a server could rightly refuse the data set (empty: it is well formed)."""
    doubts = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            doubts.append(f"no {keyword}")
    if ds.get("SOPInstanceUID") and str(ds.SOPInstanceUID) != str(meta.get("MediaStorageSOPInstanceUID", "")):
        doubts.append("SOPInstanceUID differs from the file meta")
    if ds.get("SOPClassUID") and str(ds.SOPClassUID) != str(meta.get("MediaStorageSOPClassUID", "")):
        doubts.append("SOPClassUID differs from the file meta")
    short = truncated_elements(ds)
    if short:
        doubts.append(f"truncated: {', '.join(short)}")
    return doubts


def describe(path, select):
    entry = {"path": path, "status": None, "comment": None, "error": None, "skipped": None, "doubts": [],
             "offset": None, "sop_class": "", "sop_uid": "", "transfer_syntax": "", "study_uid": ""}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(path)
        entry["doubts"] = [f"pydicom: {w.message}" for w in caught]
        sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        entry["study_uid"] = str(ds.get("StudyInstanceUID", ""))
    except Exception as exc:
        if select:
            entry["skipped"] = f"pydicom cannot read it: {type(exc).__name__}"
            return entry
        ds, sop_class = None, ""
        entry["error"] = f"dcmread: {exc}"
    if select and uid_to_service_class(sop_class) is not StorageServiceClass:
        entry["skipped"] = f"not a storage SOP class: {sop_class!r}"
        return entry
    meta, offset = split_dataset(Path(path))
    entry["offset"] = offset
    entry["sop_class"] = str(meta.get("MediaStorageSOPClassUID", ""))
    entry["sop_uid"] = str(meta.get("MediaStorageSOPInstanceUID", ""))
    entry["transfer_syntax"] = str(meta.get("TransferSyntaxUID", ""))
    if select and not (entry["sop_class"] and entry["sop_uid"] and entry["transfer_syntax"]):
        entry["skipped"] = "file meta lacks the UIDs pynetdicom needs to send it unchanged"
    elif ds is not None:
        entry["doubts"] += doubts_about(ds, meta)
    return entry


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    entries = [describe(path, s.get("select", False)) for path in s["files"]]
    pairs = []
    for entry in entries:
        if entry["skipped"]:
            continue
        pair = (entry["sop_class"], entry["transfer_syntax"])
        if pair not in pairs:
            pairs.append(pair)
    for start in range(0, len(pairs), MAX_CONTEXTS):
        chunk = pairs[start:start + MAX_CONTEXTS]
        ae = new_ae(s.get("calling_ae", "PNSTORE"))
        for sop_class, syntax in chunk:
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate(host, port, ae_title=s.get("called_ae", "HANEUL"))
        if not assoc.is_established:
            raise SystemExit(f"association to {host}:{port} failed")
        for entry in entries:
            if entry["skipped"] or (entry["sop_class"], entry["transfer_syntax"]) not in chunk:
                continue
            try:
                rsp = assoc.send_c_store(entry["path"])
                entry["status"] = status_of(rsp)
                entry["comment"] = comment_of(rsp)
            except Exception as exc:
                entry["error"] = f"send_c_store: {exc}"
            if not assoc.is_established:
                raise SystemExit(f"association lost after {entry['path']}")
        assoc.release()
    emit({"results": entries})


main()
