//! What the router learns of the JetStream it runs on, at start: whether the server is
//! part of a cluster and of how many servers, and so how many replicas the streams it
//! creates get, and which existing streams hold fewer than that cluster can give.
//!
//! Pure functions of what the server reported, so that every rule is a unit test; the
//! start-up code (`nats.rs`) asks the server and applies them.

/// The cluster as the server we connected to describes it in its INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster's name; `None` for a server that is not in a cluster.
    pub name: Option<String>,
    /// Servers in the cluster: the distinct client URLs the server advertises (its own
    /// and its routes'), at least 1. A cluster run with `no_advertise` reports none, so
    /// it counts as one server here: set `streams.replicas` explicitly there.
    pub servers: usize,
}

impl ClusterView {
    pub fn new(name: Option<&str>, connect_urls: &[String]) -> ClusterView {
        let mut urls: Vec<&str> = connect_urls.iter().map(String::as_str).collect();
        urls.sort_unstable();
        urls.dedup();
        ClusterView {
            name: name.filter(|n| !n.is_empty()).map(str::to_string),
            servers: urls.len().max(1),
        }
    }

    pub fn clustered(&self) -> bool {
        self.name.is_some()
    }

    /// The replicas a stream should have here: 3 on a cluster of at least 3 servers
    /// (a majority survives one loss), else 1 (there is nowhere to put a second copy).
    pub fn fitting_replicas(&self) -> u64 {
        if self.clustered() && self.servers >= 3 {
            3
        } else {
            1
        }
    }
}

/// The replicas chosen for the streams the router creates, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    pub value: u64,
    pub chosen_by: ChosenBy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChosenBy {
    /// `streams.replicas` (or `state.kv_replicas`) set it.
    Configured,
    /// Left at 0: chosen from the cluster the server reported.
    Cluster,
    /// Left at 0 for the bucket: the streams' value.
    Streams,
}

impl ChosenBy {
    pub fn label(self) -> &'static str {
        match self {
            ChosenBy::Configured => "configured",
            ChosenBy::Cluster => "chosen from the cluster",
            ChosenBy::Streams => "as streams.replicas",
        }
    }
}

/// `streams.replicas`: the configured value, or 0 for the cluster's choice.
pub fn stream_replicas(configured: u64, cluster: &ClusterView) -> Replicas {
    match configured {
        0 => Replicas {
            value: cluster.fitting_replicas(),
            chosen_by: ChosenBy::Cluster,
        },
        n => Replicas {
            value: n,
            chosen_by: ChosenBy::Configured,
        },
    }
}

/// `state.kv_replicas`: the configured value, or 0 for the streams' value.
pub fn bucket_replicas(configured: u64, streams: Replicas) -> Replicas {
    match configured {
        0 => Replicas {
            value: streams.value,
            chosen_by: ChosenBy::Streams,
        },
        n => Replicas {
            value: n,
            chosen_by: ChosenBy::Configured,
        },
    }
}

/// An existing stream holding fewer replicas than the cluster can give: losing the
/// node that holds its only copy loses every message in it. Reported, never changed
/// (an operator may have chosen it; raising replicas moves data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnderReplicated {
    pub stream: String,
    pub have: u64,
    pub want: u64,
}

impl UnderReplicated {
    /// The command that fixes it, for the log and the readiness detail.
    pub fn fix(&self) -> String {
        format!("nats stream edit {} --replicas {}", self.stream, self.want)
    }
}

/// Whether an existing `stream` with `have` replicas is under-replicated: it holds
/// fewer than the cluster fits (3 on 3 servers or more), or fewer than the operator
/// asked for. A stream on a single server, or holding as many, is fine.
pub fn under_replicated(
    stream: &str,
    have: u64,
    wanted: Replicas,
    cluster: &ClusterView,
) -> Option<UnderReplicated> {
    let want = match wanted.chosen_by {
        ChosenBy::Configured => wanted.value,
        ChosenBy::Cluster | ChosenBy::Streams => cluster.fitting_replicas(),
    };
    // JetStream reports 0 for a stream created without a replica count: one copy.
    let have = have.max(1);
    (have < want).then(|| UnderReplicated {
        stream: stream.to_string(),
        have,
        want,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 4222 + i)).collect()
    }

    #[test]
    fn a_single_server_gets_one_replica_a_cluster_of_three_or_more_gets_three() {
        let single = ClusterView::new(None, &[]);
        assert_eq!(stream_replicas(0, &single).value, 1);
        // A cluster of two cannot hold a majority through one loss: R1 still.
        let two = ClusterView::new(Some("c"), &urls(2));
        assert_eq!(stream_replicas(0, &two).value, 1);
        for n in [3, 5, 7] {
            let cluster = ClusterView::new(Some("c"), &urls(n));
            let r = stream_replicas(0, &cluster);
            assert_eq!(
                (r.value, r.chosen_by),
                (3, ChosenBy::Cluster),
                "{n} servers"
            );
        }
        // An empty cluster name is no cluster.
        assert_eq!(ClusterView::new(Some(""), &urls(3)).fitting_replicas(), 1);
    }

    #[test]
    fn urls_are_counted_once_and_a_configured_value_wins() {
        let mut repeated = urls(2);
        repeated.extend(urls(2));
        assert_eq!(ClusterView::new(Some("c"), &repeated).servers, 2);
        let cluster = ClusterView::new(Some("c"), &urls(3));
        let r = stream_replicas(1, &cluster);
        assert_eq!((r.value, r.chosen_by), (1, ChosenBy::Configured));
        assert_eq!(bucket_replicas(0, r).value, 1);
        assert_eq!(bucket_replicas(0, r).chosen_by, ChosenBy::Streams);
        assert_eq!(bucket_replicas(5, r).value, 5);
    }

    #[test]
    fn an_r1_stream_on_a_cluster_of_three_is_under_replicated_with_its_fix() {
        let cluster = ClusterView::new(Some("c"), &urls(3));
        let auto = stream_replicas(0, &cluster);
        let found = under_replicated("BEAMLINE_DECIDE", 1, auto, &cluster).expect("reported");
        assert_eq!((found.have, found.want), (1, 3));
        assert_eq!(found.fix(), "nats stream edit BEAMLINE_DECIDE --replicas 3");
        assert_eq!(
            under_replicated("S", 0, auto, &cluster).map(|u| u.have),
            Some(1)
        );
        assert_eq!(under_replicated("S", 3, auto, &cluster), None);
        assert_eq!(under_replicated("S", 5, auto, &cluster), None);
        // One server: nothing better is possible.
        let single = ClusterView::new(None, &[]);
        assert_eq!(
            under_replicated("S", 1, stream_replicas(0, &single), &single),
            None
        );
        // An operator who chose R1 on a cluster asked for it (start-up still warns about
        // the choice); one who chose 5 is told of a stream with 3.
        let one = stream_replicas(1, &cluster);
        assert_eq!(under_replicated("S", 1, one, &cluster), None);
        let five = stream_replicas(5, &cluster);
        assert_eq!(
            under_replicated("S", 3, five, &cluster).map(|u| u.want),
            Some(5)
        );
    }
}
