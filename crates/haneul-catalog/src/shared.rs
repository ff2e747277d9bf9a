//! What the nodes of one catalog share besides the archive itself: leases on
//! background jobs that one node runs at a time, and the remote application
//! entities every node knows.

/// A background job's lease: the node holding it runs the job until
/// `expires_ms`, unless it renews it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The job (`replication.PEER`).
    pub name: String,
    /// The node holding it ("" for a lone node).
    pub holder: String,
    pub expires_ms: i64,
}

/// A remote application entity known to every node of the catalog
/// (`haneul ae add`), besides those of each node's own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAeRecord {
    pub title: String,
    pub host: String,
    pub port: u16,
    /// Role name (`service`, `technologist`, …), checked by the caller.
    pub role: String,
    /// Site of the studies it stores ("": the archive's default).
    pub site: String,
    pub description: String,
    pub updated_ms: i64,
    /// Who made the last change (a user or `cli:…`).
    pub updated_by: String,
}
