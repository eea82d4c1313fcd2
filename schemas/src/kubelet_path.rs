//! Kubernetes metadata from a kubelet log file path (`/var/log/containers/…`,
//! `/var/log/pods/…`).

/// Kubernetes metadata carried by a kubelet log path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMeta<'a> {
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

/// Parses `/var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log` and
/// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
pub fn parse_k8s_log_path(path: &str) -> Option<PathMeta<'_>> {
    let path = path.trim();
    if let Some(rest) = path.split("/pods/").nth(1) {
        let mut parts = rest.split('/');
        let (Some(dir), Some(container), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !file.ends_with(".log") && !file.contains(".log.") {
            return None;
        }
        let mut it = dir.splitn(3, '_');
        let (Some(ns), Some(pod), Some(uid)) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        return Some(PathMeta {
            namespace: Some(ns),
            pod: Some(pod),
            container: Some(container),
            container_id: None,
            pod_uid: Some(uid),
        });
    }
    let file = path.rsplit('/').next()?;
    let stem = file.strip_suffix(".log")?;
    // pod names and namespaces cannot contain '_'; container names cannot either
    let mut it = stem.splitn(3, '_');
    let (Some(pod), Some(ns), Some(rest)) = (it.next(), it.next(), it.next()) else {
        return None;
    };
    let (container, id) = match rest.rsplit_once('-') {
        Some((c, id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (c, Some(id))
        }
        _ => (rest, None),
    };
    if pod.is_empty() || ns.is_empty() || container.is_empty() {
        return None;
    }
    Some(PathMeta {
        namespace: Some(ns),
        pod: Some(pod),
        container: Some(container),
        container_id: id,
        pod_uid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_paths() {
        let id = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16";
        let p = format!("/var/log/containers/base_core_fluent-bit-{id}.log");
        let m = parse_k8s_log_path(&p).unwrap();
        assert_eq!(
            (m.pod, m.namespace, m.container, m.container_id),
            (Some("base"), Some("core"), Some("fluent-bit"), Some(id))
        );
        let m = parse_k8s_log_path("/var/log/pods/ns1_web-0_1234-abcd/nginx/0.log").unwrap();
        assert_eq!(
            (m.namespace, m.pod, m.container),
            (Some("ns1"), Some("web-0"), Some("nginx"))
        );
        assert_eq!(parse_k8s_log_path("/var/log/syslog"), None);
    }
}
