// The replication page, for users whose role has the `monitor` permission:
// each peer's mode, lag, queue, failures and last verify from /api/status,
// the node's last backup, alarms on top, and (with the `query` permission)
// the conflicting versions kept for review. Refreshed every 5 s while shown.
import { localTime } from './audit.js';

const $ = id => document.getElementById(id);
const REFRESH_MS = 5000;

/** The alarms a peer's status raises, in words (empty when healthy). */
export function peerAlarms(peer) {
  const alarms = [];
  if (peer.sync_fallbacks > 0) alarms.push(`${peer.sync_fallbacks} stores acknowledged without the synchronous peer`);
  if (peer.lag_seconds > 60) alarms.push(`${Math.round(peer.lag_seconds)} s behind`);
  if (peer.last_error && peer.pending_instances > 0) alarms.push(`not shipping: ${peer.last_error}`);
  if (peer.verify_alarm) alarms.push('differences remain after the last verify');
  return alarms;
}

/** A backup older than this raises an alarm (a daily backup, with two hours' slack). */
const BACKUP_ALARM_SECONDS = 26 * 3600;

/** The alarms one backup target's status raises, in words (empty when healthy). */
export function backupAlarms(target) {
  const alarms = [];
  const last = target.last_run;
  if (last?.outcome === 'failed') alarms.push(`the last backup failed: ${last.error || 'no snapshot written'}`);
  if (last?.outcome === 'replaced') alarms.push('the last backup found objects someone else replaced in the backup');
  const age = target.seconds_since_success;
  if (age != null && age > BACKUP_ALARM_SECONDS) alarms.push(`no backup for ${Math.floor(age / 3600)} h`);
  return alarms;
}

/** A backup run's end in local time ('' when the status holds no valid time). */
function runTime(run) {
  const at = new Date(Number(run?.finished_unix) * 1000);
  return Number.isNaN(at.getTime()) ? '' : localTime(at.toISOString());
}

/** One backup target's last runs, in words. */
function backupText(target) {
  const success = target.last_success;
  const last = success
    ? `last snapshot ${success.snapshot} (${success.instances} instances${success.signed ? ', signed' : ''}) at ${runTime(success)}`
    : 'no snapshot written yet';
  const failed = target.last_run?.outcome === 'failed' ? `; the last run failed at ${runTime(target.last_run)}` : '';
  return `Backup to ${target.target}: ${last}${failed}.`;
}

function cell(tr, value, className = '') {
  const td = document.createElement('td');
  td.textContent = value ?? '';
  if (className) td.className = className;
  tr.append(td);
}

function verifyText(verify) {
  if (!verify) return 'never';
  const when = verify.finished_ms ? localTime(new Date(verify.finished_ms).toISOString()) : '';
  const repaired = verify.pushed || verify.pulled ? ` (${verify.pushed} sent, ${verify.pulled} fetched)` : '';
  const corrections = verify.registers_pushed || verify.registers_pulled
    ? ` (corrections: ${verify.registers_pushed || 0} sent, ${verify.registers_pulled || 0} fetched)`
    : '';
  const differing = `${verify.remaining} instances${verify.registers_remaining ? `, ${verify.registers_remaining} corrections` : ''} differing`;
  return `${verify.equal ? 'equal' : differing}${repaired}${corrections}${when ? ` · ${when}` : ''}`;
}

export class ReplicationPage {
  constructor(api, can) {
    this.api = api;
    this.can = can;
    this.peers = $('replication-peers');
    this.conflicts = $('replication-conflicts');
    this.alarms = $('replication-alarms');
    this.backup = $('replication-backup');
    this.message = $('replication-message');
    this.timer = null;
    this.generation = 0;
  }

  shown() {
    this.refresh();
  }

  hidden() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  async refresh() {
    clearTimeout(this.timer);
    const generation = ++this.generation;
    try {
      const status = await this.api.status();
      const conflicts = this.can('query') ? await this.api.replicationConflicts() : [];
      if (generation !== this.generation) return;
      this.render(Array.isArray(status.replication) ? status.replication : [], conflicts, status.backup);
      this.message.hidden = true;
    } catch (error) {
      if (generation !== this.generation) return;
      this.message.textContent = error.message;
      this.message.hidden = false;
    }
    this.peers.dataset.refreshes = String(Number(this.peers.dataset.refreshes || 0) + 1);
    if (!$('replication-page').hidden) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  render(peers, conflicts, backup) {
    const alarms = [];
    const targets = Array.isArray(backup?.targets) ? backup.targets : [];
    const lines = targets.map(target => {
      for (const alarm of backupAlarms(target)) alarms.push(`backup to ${target.target}: ${alarm}`);
      const line = Object.assign(document.createElement('p'), { className: 'section-title', textContent: backupText(target) });
      line.dataset.testid = 'replication-backup-target';
      line.dataset.outcome = target.last_run?.outcome ?? 'none';
      return line;
    });
    if (backup?.error) alarms.push(`backup: ${backup.error}`);
    if (!lines.length) {
      lines.push(Object.assign(document.createElement('p'), { className: 'section-title', textContent: 'Backup: none has run on this node (haneul backup).' }));
    }
    this.backup.replaceChildren(...lines);
    const rows = document.createDocumentFragment();
    for (const peer of peers) {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'replication-peer';
      tr.dataset.peer = peer.peer;
      tr.dataset.failures = String(peer.failures ?? 0);
      const peerAlarmList = peerAlarms(peer);
      for (const alarm of peerAlarmList) alarms.push(`${peer.peer}: ${alarm}`);
      cell(tr, peer.peer);
      cell(tr, peer.mode);
      cell(tr, peer.address);
      cell(tr, `${(peer.lag_seconds ?? 0).toFixed(1)} s`);
      cell(tr, String(peer.pending_instances ?? 0));
      cell(tr, String(peer.shipped ?? 0));
      cell(tr, String(peer.failures ?? 0), peer.failures ? 'bad' : '');
      cell(tr, verifyText(peer.last_verify));
      cell(tr, peer.last_error ?? '', 'detail');
      rows.append(tr);
    }
    if (!peers.length) {
      const tr = document.createElement('tr');
      cell(tr, 'No peers are configured ([[peer]] in the configuration).', 'empty');
      tr.firstChild.colSpan = 9;
      rows.append(tr);
    }
    this.peers.replaceChildren(rows);
    if (conflicts.length) alarms.push(`${conflicts.length} conflicting version${conflicts.length === 1 ? '' : 's'} to review`);
    this.alarms.replaceChildren(...alarms.map(text => Object.assign(document.createElement('li'), { textContent: text })));
    this.alarms.hidden = !alarms.length;
    const conflictRows = document.createDocumentFragment();
    for (const conflict of conflicts) {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'replication-conflict';
      cell(tr, localTime(new Date(conflict.detected_ms).toISOString()));
      cell(tr, conflict.sop_instance_uid, 'uids');
      cell(tr, conflict.study_instance_uid, 'uids');
      cell(tr, conflict.source_ae);
      cell(tr, `${conflict.digest.slice(0, 12)}… (here: ${(conflict.current_digest || '').slice(0, 12)}…)`);
      conflictRows.append(tr);
    }
    if (!conflicts.length) {
      const tr = document.createElement('tr');
      cell(tr, this.can('query') ? 'None.' : 'Listing them needs the query permission.', 'empty');
      tr.firstChild.colSpan = 5;
      conflictRows.append(tr);
    }
    this.conflicts.replaceChildren(conflictRows);
  }

  /** Forget everything shown (signing out). */
  clear() {
    this.hidden();
    this.generation++;
    this.peers.replaceChildren();
    this.conflicts.replaceChildren();
    this.alarms.replaceChildren();
    this.alarms.hidden = true;
    this.backup.replaceChildren();
    this.message.hidden = true;
  }
}
