"""C-FIND queries on one association, optionally cancelling one with C-CANCEL,
then a C-ECHO to show the association still works.

argv: HOST PORT SPEC_JSON {"calling_ae": str, "echo": bool,
   "queries": [{"model": "study"|"patient", "level": str, "charset": [str]|str|null,
                "keys": {keyword: value}, "cancel_after": int|null}]}
Values are set with pydicom, so Person Names are encoded in the query's charset.
prints {"queries": [{"status", "comment", "pending", "cancel_sent",
                     "matches": [{keyword: text | [text], "PatientName": {...}}]}],
        "echo_status": int|null}"""

import sys

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from pynetdicom import _config
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import comment_of, emit, new_ae, spec, status_of

# Logging identifiers would decode them before their raw bytes are looked at.
_config.LOG_RESPONSE_IDENTIFIERS = False

MODELS = {"study": StudyRootQueryRetrieveInformationModelFind,
          "patient": PatientRootQueryRetrieveInformationModelFind}


def describe(identifier):
    """Decoded values of a response identifier; PN values with their groups."""
    raws = {tag: identifier.get_item(tag) for tag in list(identifier.keys())}
    out = {}
    for element in identifier:
        keyword = element.keyword or str(element.tag)
        value = element.value
        if element.VR == "PN":
            names = list(value) if isinstance(value, MultiValue) else ([value] if value else [])
            first = names[0] if names else PersonName("")
            raw = getattr(raws[element.tag], "value", None)
            out[keyword] = {
                "str": str(first),
                "alphabetic": first.alphabetic,
                "ideographic": first.ideographic,
                "phonetic": first.phonetic,
                "raw_hex": bytes(raw).hex() if isinstance(raw, (bytes, bytearray)) else None,
            }
        elif element.VR == "SQ":
            out[keyword] = len(value)
        elif isinstance(value, MultiValue):
            out[keyword] = [str(v) for v in value]
        elif value is None:
            out[keyword] = ""
        else:
            out[keyword] = str(value)
    return out


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    ae = new_ae(s.get("calling_ae", "PNFIND"))
    for model in MODELS.values():
        ae.add_requested_context(model)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=s.get("called_ae", "HANEUL"))
    if not assoc.is_established:
        raise SystemExit(f"association to {host}:{port} failed")
    results = []
    for n, q in enumerate(s["queries"]):
        model = MODELS[q.get("model", "study")]
        query = Dataset()
        if q.get("charset") is not None:
            query.SpecificCharacterSet = q["charset"]
        query.QueryRetrieveLevel = q["level"]
        for keyword, value in q["keys"].items():
            setattr(query, keyword, value)
        msg_id = 100 + n
        context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == model)
        result = {"status": None, "comment": None, "pending": 0, "cancel_sent": False, "matches": []}
        for rsp, identifier in assoc.send_c_find(query, model, msg_id=msg_id):
            code = status_of(rsp)
            if code in (0xFF00, 0xFF01):
                result["pending"] += 1
                result["matches"].append(describe(identifier))
                cancel_after = q.get("cancel_after")
                if cancel_after is not None and result["pending"] == cancel_after and not result["cancel_sent"]:
                    assoc.send_c_cancel(msg_id, context_id)
                    result["cancel_sent"] = True
                continue
            result["status"] = code
            result["comment"] = comment_of(rsp)
        results.append(result)
    echo_status = None
    if s.get("echo", False):
        echo_status = status_of(assoc.send_c_echo())
    assoc.release()
    emit({"queries": results, "echo_status": echo_status})


main()
