"""Storage Commitment Push Model SCU: N-ACTION requests, and the N-EVENT-REPORTs
that answer them, either on the requesting association ("same") or on a new
association to an SCP run here ("new", listening on listen_port as calling_ae).

argv: HOST PORT SPEC_JSON {"calling_ae": str, "mode": "same"|"new", "listen_port": int,
   "wait": float, "requests": [{"transaction_uid": str, "references": [[class, uid], ...]}]}
prints {"actions": [{"transaction_uid", "status", "comment"}],
        "reports": [{"transaction_uid", "event_type", "on_requesting_association",
                     "caller", "referenced": [[class, uid]], "failed": [[class, uid, reason]],
                     "retrieve_ae"}]}"""

import sys
import threading

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import evt
from pynetdicom.sop_class import StorageCommitmentPushModel

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import comment_of, emit, new_ae, spec, status_of, wait_until

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    lock = threading.Lock()
    reports = []
    requester = {"assoc": None}

    def on_report(event):
        info = event.event_information
        report = {
            "transaction_uid": str(info.get("TransactionUID", "")),
            "event_type": int(event.request.EventTypeID),
            "affected_sop_class": str(event.request.AffectedSOPClassUID),
            "affected_sop_instance": str(event.request.AffectedSOPInstanceUID),
            "on_requesting_association": event.assoc is requester["assoc"],
            "caller": event.assoc.requestor.ae_title,
            "retrieve_ae": str(info.get("RetrieveAETitle", "")),
            "referenced": [[str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)]
                           for i in info.get("ReferencedSOPSequence", [])],
            "failed": [[str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID),
                        int(i.FailureReason) if "FailureReason" in i else None]
                       for i in info.get("FailedSOPSequence", [])],
        }
        with lock:
            reports.append(report)
        return 0x0000, None

    handlers = [(evt.EVT_N_EVENT_REPORT, on_report)]
    server = None
    if s["mode"] == "new":
        scp = new_ae(s["calling_ae"])
        # The server (association requestor) takes the SCP role of the commitment SOP class.
        scp.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        server = scp.start_server(("127.0.0.1", s["listen_port"]), block=False, evt_handlers=handlers)
    try:
        ae = new_ae(s["calling_ae"])
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(host, port, ae_title=s.get("called_ae", "HANEUL"), evt_handlers=handlers)
        if not assoc.is_established:
            raise SystemExit(f"association to {host}:{port} failed")
        requester["assoc"] = assoc
        actions = []
        for request in s["requests"]:
            ds = Dataset()
            ds.TransactionUID = request["transaction_uid"]
            ds.ReferencedSOPSequence = Sequence()
            for sop_class, sop_uid in request["references"]:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop_uid
                ds.ReferencedSOPSequence.append(item)
            rsp, _reply = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
            actions.append({"transaction_uid": request["transaction_uid"], "status": status_of(rsp),
                            "comment": comment_of(rsp)})
            if s["mode"] == "same":
                # The report for this transaction must come before the next request.
                def arrived(uid=request["transaction_uid"]):
                    with lock:
                        return any(r["transaction_uid"] == uid for r in reports)
                wait_until(arrived, float(s.get("wait", 15)))
        assoc.release()
        if s["mode"] == "new":
            def all_arrived():
                with lock:
                    return len(reports) >= len(s["requests"])
            wait_until(all_arrived, float(s.get("wait", 15)))
            # Let the server's association finish its release before shutting down.
            wait_until(lambda: not server.active_associations, 5)
    finally:
        if server is not None:
            server.shutdown()
    with lock:
        emit({"actions": actions, "reports": list(reports)})


main()
