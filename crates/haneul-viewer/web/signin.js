// Signing in: the sign-in form (POST /api/login) and the change-password
// form a user with `must_change_password` sees before anything else (POST
// /api/password). The page's CSP allows no form actions: both forms are
// handled here and never submitted by the browser. Passwords are read from
// the form, sent once and cleared from it; nothing is kept.
const $ = id => document.getElementById(id);

/** "14 min 59 s", "45 s", "2 h 5 min". */
export function formatWait(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const minutes = Math.round((s % 3600) / 60);
  return `${Math.floor(s / 3600)} h${minutes ? ` ${minutes} min` : ''}`;
}

function showMessage(element, textValue, kind = 'error') {
  element.textContent = textValue || '';
  element.hidden = !textValue;
  element.classList.toggle('info', kind === 'info');
}

export class SignIn {
  /**
   * `onSignedIn(session)`: a session is open and usable;
   * `onSignOut()`: the user gave up on changing the password.
   */
  constructor(api, { onSignedIn, onSignOut }) {
    this.api = api;
    this.onSignedIn = onSignedIn;
    this.onSignOut = onSignOut;
    this.page = $('signin-page');
    this.form = $('signin-form');
    this.passwordForm = $('password-form');
    this.message = $('signin-message');
    this.passwordMessage = $('password-message');
    this.busy = false;
    this.form.addEventListener('submit', e => {
      e.preventDefault();
      this.signIn();
    });
    this.passwordForm.addEventListener('submit', e => {
      e.preventDefault();
      this.changePassword();
    });
    $('password-sign-out').addEventListener('click', () => this.onSignOut());
  }

  /** The sign-in form, with a message (why the user is here) or none, and the user name to offer. */
  show(message = '', kind = 'info', { user = '' } = {}) {
    this.page.hidden = false;
    this.passwordForm.hidden = true;
    this.passwordForm.reset();
    this.form.hidden = false;
    if (user) this.form.elements.user.value = user;
    this.form.elements.password.value = '';
    this.setBusy(false);
    showMessage(this.message, message, kind);
    const field = this.form.elements.user.value ? this.form.elements.password : this.form.elements.user;
    field.focus();
  }

  /** The change-password form: the session may do nothing else until it is done. */
  showPasswordChange(session, message = '') {
    this.page.hidden = false;
    this.form.hidden = true;
    this.form.reset();
    this.passwordForm.hidden = false;
    this.passwordForm.reset();
    this.passwordForm.elements.user.value = session.user;
    this.session = session;
    this.setBusy(false);
    showMessage(this.passwordMessage, message || `${session.user}: your password must be changed before you go on.`, 'info');
    this.passwordForm.elements.current.focus();
  }

  hide() {
    this.page.hidden = true;
    this.form.reset();
    this.passwordForm.reset();
    showMessage(this.message, '');
    showMessage(this.passwordMessage, '');
  }

  setBusy(busy) {
    this.busy = busy;
    $('signin-submit').disabled = busy;
    $('password-submit').disabled = busy;
  }

  async signIn() {
    if (this.busy) return;
    const user = this.form.elements.user.value.trim();
    const password = this.form.elements.password.value;
    if (!user || !password) {
      showMessage(this.message, 'Enter your user name and password.');
      return;
    }
    this.setBusy(true);
    showMessage(this.message, 'Signing in…', 'info');
    let session;
    try {
      session = await this.api.login(user, password);
    } catch (error) {
      this.setBusy(false);
      this.form.elements.password.value = '';
      this.form.elements.password.focus();
      showMessage(this.message, this.describe(error));
      return;
    }
    this.form.elements.password.value = '';
    this.setBusy(false);
    this.onSignedIn(session);
  }

  describe(error) {
    if (error.status === 401) return 'Wrong user name or password.';
    if (error.status === 429) {
      const wait = error.retryAfter;
      if (!wait) return 'Too many failed sign-ins: this account is locked for a while. Try again later.';
      const until = new Date(Date.now() + wait * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      return `Too many failed sign-ins: this account is locked. Try again in ${formatWait(wait)} (after ${until}).`;
    }
    if (error.status === 0) return 'The server cannot be reached. Check the connection and try again.';
    return error.message;
  }

  async changePassword() {
    if (this.busy) return;
    const form = this.passwordForm.elements;
    if (form.next.value !== form.again.value) {
      showMessage(this.passwordMessage, 'The new passwords differ: type the same new password twice.');
      form.again.value = '';
      form.again.focus();
      return;
    }
    if (form.next.value === form.current.value) {
      showMessage(this.passwordMessage, 'The new password must differ from the current one.');
      return;
    }
    this.setBusy(true);
    showMessage(this.passwordMessage, 'Changing the password…', 'info');
    try {
      await this.api.changePassword(form.current.value, form.next.value);
    } catch (error) {
      this.setBusy(false);
      if (error.status === 401) return; // the session ended: the app shows the sign-in form
      let why = error.message;
      if (error.status === 403) why = 'The current password is wrong.';
      else if (error.status === 400) why = `The new password is not accepted: ${error.detail || error.message}`;
      if (error.status === 403) form.current.value = '';
      form.next.value = '';
      form.again.value = '';
      showMessage(this.passwordMessage, why);
      (error.status === 403 ? form.current : form.next).focus();
      return;
    }
    this.passwordForm.reset();
    let session;
    try {
      session = await this.api.session();
    } catch (error) {
      this.setBusy(false);
      showMessage(this.passwordMessage, error.message);
      return;
    }
    this.setBusy(false);
    if (!session) {
      this.show('Your session ended: sign in again with the new password.');
      return;
    }
    this.onSignedIn(session);
  }
}
