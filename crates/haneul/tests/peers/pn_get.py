"""C-GET studies (Study Root, STUDY level) and keep every C-STORE sub-operation's
raw data set bytes, as received, in OUTDIR/<n>.bin.

argv: HOST PORT SPEC_JSON {"calling_ae": str, "outdir": str,
                           "pairs": [[sop_class, transfer_syntax], ...], "studies": [uid, ...]}
Each pair is proposed as its own presentation context with SCP role selection.
prints {"studies": [{"study_uid", "status", "counts", "comment", "pending"}],
        "received": [{"study_uid", "sop_uid", "sop_class", "transfer_syntax", "file", "length"}]}"""

import os
import sys

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import comment_of, counts_of, emit, new_ae, spec, status_of


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    os.makedirs(s["outdir"], exist_ok=True)
    received = []
    current = {"study": None}

    def on_store(event):
        raw = event.request.DataSet.getvalue()
        path = os.path.join(s["outdir"], f"{len(received)}.bin")
        with open(path, "wb") as out:
            out.write(raw)
        received.append({
            "study_uid": current["study"],
            "sop_uid": str(event.request.AffectedSOPInstanceUID),
            "sop_class": str(event.request.AffectedSOPClassUID),
            "transfer_syntax": str(event.context.transfer_syntax),
            "file": path,
            "length": len(raw),
        })
        return 0x0000

    pairs = [tuple(pair) for pair in s["pairs"]]
    if len(pairs) > 127:
        raise SystemExit("too many (class, transfer syntax) pairs for one association")
    ae = new_ae(s.get("calling_ae", "PNGET"))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
        if sop_class not in [role.sop_class_uid for role in roles]:
            roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(host, port, ae_title=s.get("called_ae", "HANEUL"), ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise SystemExit(f"association to {host}:{port} failed")
    studies = []
    for study_uid in s["studies"]:
        current["study"] = study_uid
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        result = {"study_uid": study_uid, "status": None, "counts": None, "comment": None, "pending": 0}
        for rsp, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            code = status_of(rsp)
            if code in (0xFF00, 0xFF01):
                result["pending"] += 1
                continue
            result.update(status=code, counts=counts_of(rsp), comment=comment_of(rsp))
        studies.append(result)
    assoc.release()
    emit({"studies": studies, "received": received})


main()
