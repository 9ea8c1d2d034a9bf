//! How fruits' plan nodes and functions travel between client, scheduler and executors.
//!
//! [`FruitsCodec`] wraps Ballista's own codec: fruits nodes and UDFs are encoded as a magic
//! tag, the fruits version, a JSON header, a signature and an optional binary body; everything
//! else goes to Ballista. A process that decodes a plan from another fruits version refuses it
//! with one line naming both versions; one that decodes a node not signed with its own
//! cluster token ([`crate::auth`]) refuses it too.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use fruits_engine::plan::NodeSpec;
use fruits_engine::udf::FunctionSpec;
use serde::{Deserialize, Serialize};

use crate::auth::{ClusterToken, MAC_BYTES};

/// Marks a payload as fruits' (Ballista's protobuf messages never start with these bytes).
const MAGIC: &[u8; 8] = b"\xffFRUITS\x01";

/// This build's version, checked on every decode.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a payload holds: a plan node's or a function's spec, as the engine defines them
/// (the codec never looks inside).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
enum Node {
    Plan(NodeSpec),
    Function(FunctionSpec),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    fruits: String,
    #[serde(flatten)]
    node: Node,
}

fn encode_as(
    version: &str,
    token: &ClusterToken,
    node: Node,
    body: &[u8],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let header = serde_json::to_vec(&Header {
        fruits: version.to_string(),
        node,
    })
    .map_err(|e| DataFusionError::Internal(format!("encoding a fruits node: {e}")))?;
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(&token.sign(&[&header, body]));
    buf.extend_from_slice(body);
    Ok(())
}

/// `Some((node, body))` for a fruits payload signed with `token`, `None` for anything else.
fn decode_with<'a>(token: &ClusterToken, buf: &'a [u8]) -> Result<Option<(Node, &'a [u8])>> {
    let Some(rest) = buf.strip_prefix(MAGIC.as_slice()) else {
        return Ok(None);
    };
    let bad = || DataFusionError::Internal("a fruits plan node is truncated".into());
    let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad())?;
    if rest.len() < len + MAC_BYTES {
        return Err(bad());
    }
    let (header, rest) = rest.split_at(len);
    let (mac, body) = rest.split_at(MAC_BYTES);
    // Check the version before the shape: another version may have another shape.
    #[derive(Deserialize)]
    struct Version {
        fruits: String,
    }
    let version: Version = serde_json::from_slice(header)
        .map_err(|e| DataFusionError::Internal(format!("a fruits plan node: {e}")))?;
    if version.fruits != VERSION {
        return Err(DataFusionError::Plan(format!(
            "version mismatch: the plan comes from fruits {}, this process runs fruits {VERSION}",
            version.fruits
        )));
    }
    if !token.verify(&[header, body], mac) {
        return Err(DataFusionError::Plan(format!(
            "refused a plan not signed with this cluster's token: give the client, the scheduler and every executor the same {}",
            crate::auth::TOKEN_ENV
        )));
    }
    let header: Header = serde_json::from_slice(header)
        .map_err(|e| DataFusionError::Internal(format!("a fruits plan node: {e}")))?;
    Ok(Some((header.node, body)))
}

/// The physical codec of client, scheduler and executors: fruits' nodes and UDFs, signed
/// with the cluster's token, then Ballista's.
#[derive(Debug)]
pub struct FruitsCodec {
    ballista: BallistaPhysicalExtensionCodec,
    token: ClusterToken,
}

impl FruitsCodec {
    /// A codec that signs what it encodes with `token` and decodes only what it signed.
    pub fn new(token: ClusterToken) -> FruitsCodec {
        FruitsCodec {
            ballista: BallistaPhysicalExtensionCodec::default(),
            token,
        }
    }

    fn encode(&self, node: Node, body: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        encode_as(VERSION, &self.token, node, body, buf)
    }

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Node, &'a [u8])>> {
        decode_with(&self.token, buf)
    }
}

impl PhysicalExtensionCodec for FruitsCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((node, _)) = self.decode(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx, converter);
        };
        let Node::Plan(spec) = node else {
            return Err(DataFusionError::Internal(
                "a fruits function where a plan node was expected".into(),
            ));
        };
        let input = inputs
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("a fruits node without input".into()))?;
        spec.into_plan(input)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match NodeSpec::of(node.as_ref()) {
            Some(spec) => self.encode(Node::Plan(spec), &[], buf),
            None => self.ballista.try_encode(node, buf, converter),
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match self.decode(buf)? {
            Some((Node::Function(spec), body)) => Ok(Arc::new(spec.into_udf(body)?)),
            Some(_) => Err(DataFusionError::Internal(format!(
                "{name}: a fruits plan node where a function was expected"
            ))),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        match FunctionSpec::of(udf) {
            Some((spec, body)) => self.encode(Node::Function(spec), &body, buf),
            None => self.ballista.try_encode_udf(udf, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> ClusterToken {
        ClusterToken::new(s.as_bytes()).unwrap()
    }

    fn staging(uri: &str) -> fruits_engine::store::StoreRef {
        fruits_engine::store::StoreRef {
            uri: uri.into(),
            s3: Default::default(),
        }
    }

    fn write_node() -> Node {
        Node::Plan(NodeSpec::Write(fruits_engine::plan::WriteSpec {
            staging: staging("file:///tmp/x"),
            kind: fruits_engine::vocab::WriteKind::Features,
            run: Some("r1".into()),
        }))
    }

    #[test]
    fn foreign_payloads_are_not_ours_and_other_versions_are_refused() {
        let codec = FruitsCodec::new(token("a-token-of-16-bytes"));
        assert!(codec.decode(b"\x0a\x02hi").unwrap().is_none());
        let mut buf = Vec::new();
        codec.encode(write_node(), &[], &mut buf).unwrap();
        assert!(matches!(
            codec.decode(&buf).unwrap(),
            Some((Node::Plan(NodeSpec::Write(_)), _))
        ));
        let mut other = Vec::new();
        let node = Node::Plan(NodeSpec::FeatureRead(
            fruits_engine::plan::FeatureReadSpec {
                staging: staging("file:///tmp/x"),
            },
        ));
        encode_as("0.0.0-other", &codec.token, node, &[], &mut other).unwrap();
        let err = codec.decode(&other).unwrap_err().to_string();
        assert!(
            err.contains("fruits 0.0.0-other") && err.contains(VERSION),
            "{err}"
        );
        assert!(codec.decode(&buf[..12]).is_err());
    }

    #[test]
    fn nodes_signed_with_another_token_or_altered_are_refused() {
        let ours = FruitsCodec::new(token("a-token-of-16-bytes"));
        let theirs = FruitsCodec::new(token("another-token-16-b"));
        let mut buf = Vec::new();
        theirs.encode(write_node(), b"body", &mut buf).unwrap();
        let err = ours.decode(&buf).unwrap_err().to_string();
        assert!(
            err.contains("not signed with this cluster's token"),
            "{err}"
        );
        let mut mine = Vec::new();
        ours.encode(write_node(), b"body", &mut mine).unwrap();
        assert!(ours.decode(&mine).is_ok());
        // The staging location changed in transit: refused.
        let text = String::from_utf8_lossy(&mine).replace("/tmp/x", "/tmp/y");
        let mut altered = mine.clone();
        if let Some(at) = text.find("/tmp/y") {
            altered[at + 5] = b'y';
        }
        assert!(ours.decode(&altered).is_err());
    }
}
