//! Who is in the world: the actors and their node ids. Node ids index the network's
//! connection table and name the lanes of a timeline. The layout is a function of three
//! counts drawn per seed (router processes, gateways, CAF workers).

use serde::Serialize;

use crate::net::NodeId;

/// The extension services of the built-in registry, in node order.
pub const EXTENSIONS: [&str; 3] = ["normalize_text", "pii_guard", "mask_pii"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Role {
    Router(usize),
    Gateway(usize),
    Caf(usize),
    Ext(usize),
    Usage,
    Ops,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    roles: Vec<Role>,
    names: Vec<String>,
    routers: usize,
    gateways: usize,
    cafs: usize,
}

impl Topology {
    pub fn new(routers: usize, gateways: usize, cafs: usize) -> Self {
        let mut roles = Vec::new();
        roles.extend((0..routers).map(Role::Router));
        roles.extend((0..gateways).map(Role::Gateway));
        roles.extend((0..cafs).map(Role::Caf));
        roles.extend((0..EXTENSIONS.len()).map(Role::Ext));
        roles.push(Role::Usage);
        roles.push(Role::Ops);
        let names = roles
            .iter()
            .map(|r| match r {
                Role::Router(i) => format!("router-{}", i + 1),
                Role::Gateway(i) => format!("gw-{}", i + 1),
                Role::Caf(i) => format!("caf-{}", i + 1),
                Role::Ext(i) => format!("ext-{}", EXTENSIONS[*i]),
                Role::Usage => "usage".to_string(),
                Role::Ops => "ops".to_string(),
            })
            .collect();
        Topology {
            roles,
            names,
            routers,
            gateways,
            cafs,
        }
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    pub fn role(&self, node: NodeId) -> Role {
        self.roles[node]
    }

    pub fn name(&self, node: NodeId) -> &str {
        &self.names[node]
    }

    pub fn routers(&self) -> usize {
        self.routers
    }

    pub fn gateways(&self) -> usize {
        self.gateways
    }

    pub fn cafs(&self) -> usize {
        self.cafs
    }

    pub fn router(&self, i: usize) -> NodeId {
        i
    }

    pub fn gateway(&self, i: usize) -> NodeId {
        self.routers + i
    }

    pub fn caf(&self, i: usize) -> NodeId {
        self.routers + self.gateways + i
    }

    pub fn ext(&self, i: usize) -> NodeId {
        self.routers + self.gateways + self.cafs + i
    }

    pub fn usage(&self) -> NodeId {
        self.routers + self.gateways + self.cafs + EXTENSIONS.len()
    }

    pub fn ops(&self) -> NodeId {
        self.usage() + 1
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> {
        0..self.roles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_roles_agree() {
        let t = Topology::new(2, 1, 2);
        assert_eq!(t.len(), 2 + 1 + 2 + 3 + 2);
        for i in 0..2 {
            assert_eq!(t.role(t.router(i)), Role::Router(i));
            assert_eq!(t.role(t.caf(i)), Role::Caf(i));
        }
        assert_eq!(t.role(t.gateway(0)), Role::Gateway(0));
        assert_eq!(t.role(t.ext(1)), Role::Ext(1));
        assert_eq!(t.name(t.ext(1)), "ext-pii_guard");
        assert_eq!(t.role(t.usage()), Role::Usage);
        assert_eq!(t.name(t.ops()), "ops");
    }
}
