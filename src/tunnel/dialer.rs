//! The one way through to a cluster: its edge, the Access login, the cluster, and the retry a
//! refused token gets. The listener opens each connection's stream through it and the health
//! probes ask through it; neither needs the other.

use crate::access::{AccessClient, Credential, Interaction};
use crate::inventory::Cluster;
use crate::tunnel::carrier::{CarrierError, Edge, EdgeStream};

/// Dials a cluster through its edge with the right credential.
pub struct Dialer {
    cluster: Cluster,
    edge: Edge,
    access: Option<AccessClient>,
}

impl Dialer {
    /// Dials `cluster` through `edge`; `access` is the Access login, for clusters that
    /// configure no credential of their own (`None`: configuration and environment only).
    pub fn new(cluster: Cluster, edge: Edge, access: Option<AccessClient>) -> Self {
        Self {
            cluster,
            edge,
            access,
        }
    }

    /// The cluster dialled.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A stream to the cluster for a new connection. May start the browser login: the client
    /// (kubectl) waits while the user signs in.
    pub async fn open(&self) -> Result<EdgeStream, CarrierError> {
        self.with_credential(Interaction::Interactive, |credential| async move {
            self.edge.open(&credential).await
        })
        .await
    }

    /// A stream for the health probe: opened as [`open`](Self::open) opens one, but on a new
    /// connection to the edge (never a warm one: the probe measures the whole path) and never
    /// opening a browser (stored tokens and the silent exchange only). Opening it proves the
    /// edge is reachable, its certificate valid and the credential accepted, and for a `socks`
    /// origin that the origin's SOCKS server takes the request for the API server; the prober
    /// then asks the API server over it.
    pub async fn probe(&self) -> Result<EdgeStream, CarrierError> {
        self.with_credential(Interaction::Silent, |credential| async move {
            self.edge.open_fresh(&credential).await
        })
        .await
    }

    /// Closes the edge's warm connections: after a wake-up or a network change they may be
    /// dead without a word.
    pub fn clear_warm(&self) {
        self.edge.clear_warm();
    }

    /// Gets the credential for one attempt and runs `attempt` with it. When the edge refuses a
    /// token of the Access login (a redirect to the login, a 401), the token is forgotten and
    /// the attempt runs once more with a new one; a 5xx never costs a token.
    async fn with_credential<T, F, Fut>(
        &self,
        interaction: Interaction,
        attempt: F,
    ) -> Result<T, CarrierError>
    where
        F: Fn(Credential) -> Fut,
        Fut: std::future::Future<Output = Result<T, CarrierError>>,
    {
        let cluster = &self.cluster;
        let Some(access) = &self.access else {
            let credential =
                crate::access::credential_for(cluster, &[]).map_err(CarrierError::Credential)?;
            return attempt(credential).await;
        };
        let credential = access
            .credential(cluster, interaction)
            .await
            .map_err(CarrierError::Credential)?;
        match attempt(credential.clone()).await {
            Err(e) if e.token_refused() && access.reject(cluster, &credential).await => {
                let credential = access
                    .credential(cluster, interaction)
                    .await
                    .map_err(CarrierError::Credential)?;
                attempt(credential).await
            }
            other => other,
        }
    }
}
