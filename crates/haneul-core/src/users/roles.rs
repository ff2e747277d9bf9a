//! Roles and what each may do: the permission matrix every edge will check.
//!
//! Pure data, no I/O: the HTTP and DIMSE edges map each route or service to
//! a [`Permission`] and ask [`PermissionMatrix::allows`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user is to the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Configures the archive, manages users, reads the audit trail.
    Admin,
    /// Reads and reports; stores key images and reports; exports.
    Radiologist,
    /// Reads: query, retrieve, view.
    Clinician,
    /// Stores and corrects what the modalities sent.
    Technologist,
    /// Reaches only de-identified exports.
    Researcher,
    /// Machine to machine (modalities, routers, AI): query, retrieve, store.
    Service,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::Radiologist, Role::Clinician, Role::Technologist, Role::Researcher, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Radiologist => "radiologist",
            Role::Clinician => "clinician",
            Role::Technologist => "technologist",
            Role::Researcher => "researcher",
            Role::Service => "service",
        }
    }

    /// "admin, radiologist, …" for error messages.
    pub fn names() -> String {
        Role::ALL.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {name:?}; valid roles: {}", Role::names())]
pub struct UnknownRole {
    pub name: String,
}

impl FromStr for Role {
    type Err = UnknownRole;

    /// Role names are matched without regard to ASCII case.
    fn from_str(name: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownRole { name: name.to_string() })
    }
}

/// Something a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// C-FIND, QIDO-RS, study lists.
    Query,
    /// C-MOVE, C-GET, WADO-RS, WADO-URI.
    Retrieve,
    /// The web viewer (rendered images, frames shown on screen).
    View,
    /// C-STORE, STOW-RS, import.
    Store,
    /// Changing stored data (patient or study corrections).
    Correct,
    /// Removing instances, series and studies.
    Delete,
    /// Exporting identified data out of the archive.
    Export,
    /// Exporting de-identified data.
    ExportDeidentified,
    /// Settings, known AEs, users and tokens.
    Configure,
    /// Reading and verifying the audit trail.
    Audit,
    /// Status, statistics and metrics (monitoring systems).
    Monitor,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::Query,
        Permission::Retrieve,
        Permission::View,
        Permission::Store,
        Permission::Correct,
        Permission::Delete,
        Permission::Export,
        Permission::ExportDeidentified,
        Permission::Configure,
        Permission::Audit,
        Permission::Monitor,
    ];

    /// The name used in configuration, logs and audit records (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Query => "query",
            Permission::Retrieve => "retrieve",
            Permission::View => "view",
            Permission::Store => "store",
            Permission::Correct => "correct",
            Permission::Delete => "delete",
            Permission::Export => "export",
            Permission::ExportDeidentified => "export-deidentified",
            Permission::Configure => "configure",
            Permission::Audit => "audit",
            Permission::Monitor => "monitor",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of permissions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u16);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn of(permissions: &[Permission]) -> Permissions {
        Permissions(permissions.iter().fold(0, |bits, permission| bits | permission.bit()))
    }

    pub fn all() -> Permissions {
        Permissions::of(&Permission::ALL)
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | permission.bit())
    }

    pub fn without(self, permission: Permission) -> Permissions {
        Permissions(self.0 & !permission.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |permission| self.contains(*permission))
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Role → permissions. [`PermissionMatrix::default`] is the built-in policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionMatrix {
    by_role: [Permissions; Role::ALL.len()],
}

impl Default for PermissionMatrix {
    fn default() -> PermissionMatrix {
        use Permission::*;
        let read = [Query, Retrieve, View];
        let mut matrix = PermissionMatrix { by_role: [Permissions::NONE; Role::ALL.len()] };
        matrix.set(Role::Admin, Permissions::all());
        matrix.set(Role::Radiologist, Permissions::of(&[Query, Retrieve, View, Store, Export, ExportDeidentified]));
        matrix.set(Role::Clinician, Permissions::of(&read));
        matrix.set(Role::Technologist, Permissions::of(&[Query, Retrieve, View, Store, Correct]));
        matrix.set(Role::Researcher, Permissions::of(&[ExportDeidentified]));
        matrix.set(Role::Service, Permissions::of(&[Query, Retrieve, Store, Monitor]));
        matrix
    }
}

impl PermissionMatrix {
    pub fn permissions(&self, role: Role) -> Permissions {
        self.by_role[role as usize]
    }

    pub fn set(&mut self, role: Role, permissions: Permissions) {
        self.by_role[role as usize] = permissions;
    }

    pub fn allows(&self, role: Role, permission: Permission) -> bool {
        self.permissions(role).contains(permission)
    }
}

#[cfg(test)]
mod tests {
    use super::Permission::*;
    use super::*;

    #[test]
    fn roles_parse_and_display() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
        assert_eq!("Clinician".parse::<Role>(), Ok(Role::Clinician));
        let error = "doctor".parse::<Role>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown role \"doctor\"; valid roles: admin, radiologist, clinician, technologist, researcher, service"
        );
        assert_eq!(serde_json::to_string(&Role::Technologist).unwrap(), "\"technologist\"");
    }

    #[test]
    fn clinicians_read_only() {
        let matrix = PermissionMatrix::default();
        for permission in [Query, Retrieve, View] {
            assert!(matrix.allows(Role::Clinician, permission), "{permission:?}");
        }
        for permission in [Store, Correct, Delete, Export, ExportDeidentified, Configure, Audit, Monitor] {
            assert!(!matrix.allows(Role::Clinician, permission), "{permission:?}");
        }
    }

    #[test]
    fn technologists_store_and_correct() {
        let matrix = PermissionMatrix::default();
        assert!(matrix.allows(Role::Technologist, Store));
        assert!(matrix.allows(Role::Technologist, Correct));
        assert!(!matrix.allows(Role::Technologist, Delete));
        assert!(!matrix.allows(Role::Technologist, Configure));
    }

    #[test]
    fn researchers_only_reach_deidentified_exports() {
        let matrix = PermissionMatrix::default();
        assert_eq!(matrix.permissions(Role::Researcher).iter().collect::<Vec<_>>(), vec![ExportDeidentified]);
        // Identified data stays out of reach by every path.
        for permission in [Query, Retrieve, View, Export] {
            assert!(!matrix.allows(Role::Researcher, permission));
        }
    }

    #[test]
    fn only_admins_configure_delete_and_audit() {
        let matrix = PermissionMatrix::default();
        assert_eq!(matrix.permissions(Role::Admin), Permissions::all());
        for role in Role::ALL.into_iter().filter(|role| *role != Role::Admin) {
            for permission in [Configure, Delete, Audit] {
                assert!(!matrix.allows(role, permission), "{role} must not {permission:?}");
            }
        }
    }

    #[test]
    fn service_accounts_move_images_but_do_not_view() {
        let matrix = PermissionMatrix::default();
        assert!(matrix.allows(Role::Service, Store));
        assert!(matrix.allows(Role::Service, Retrieve));
        assert!(!matrix.allows(Role::Service, View));
    }

    #[test]
    fn permission_sets() {
        let set = Permissions::of(&[Query, Audit]);
        assert!(set.contains(Query) && set.contains(Audit) && !set.contains(Store));
        assert_eq!(set.without(Audit).with(Store), Permissions::of(&[Store, Query]));
        assert_eq!(format!("{set:?}"), "{Query, Audit}");
        assert_eq!(Permissions::all().iter().count(), Permission::ALL.len());
    }

    #[test]
    fn permission_names_are_their_serialized_form() {
        for permission in Permission::ALL {
            assert_eq!(serde_json::to_string(&permission).unwrap(), format!("\"{}\"", permission.as_str()));
        }
    }
}
