//! A test PKI for the TLS tests of every crate (feature `test-pki`, for
//! dev-dependencies only): one CA and leaf certificates made with the
//! `openssl` command in a temporary directory.

use std::path::PathBuf;
use std::process::Command;

/// A test PKI made with the `openssl` CLI in a temporary directory:
/// `ca.pem`/`ca.key`, `server.pem`/`server.key` (for 127.0.0.1 and
/// localhost) and `client.pem`/`client.key` (CN `HANEUL-TEST-CLIENT`), all
/// P-256 keys valid for two days.
pub struct Pki {
    dir: tempfile::TempDir,
}

/// The common name of the client certificate of a [`Pki`].
pub const TEST_CLIENT_CN: &str = "HANEUL-TEST-CLIENT";

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Haneul Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.issue("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
        pki.issue("client", TEST_CLIENT_CN, "extendedKeyUsage=clientAuth\n");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file of the PKI as a string, for command lines and TOML.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("running openssl (install the openssl package)");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A leaf certificate `<name>.pem` with key `<name>.key`, signed by the CA.
    pub fn issue(&self, name: &str, common_name: &str, extensions: &str) {
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let extensions = format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}");
        std::fs::write(self.path(&ext), extensions).expect("writing extensions");
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={common_name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// A `[table]` (`http.tls`, `dicom.tls`) with the server's certificate
    /// and key, and extra lines.
    pub fn config(&self, table: &str, extra: &str) -> String {
        format!(
            "[{table}]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
            self.file("server.pem"),
            self.file("server.key")
        )
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}
