//! A sharded deployment on NATS (docs/FORMAT.md, docs/SPEC.md R9): one stream per shard,
//! `<name>-000`, `<name>-001`, ..., each a log as [`NatsStore`](crate::NatsStore) keeps it,
//! and a stream `<name>-deployment` whose one message fixes the shard count.

use std::time::Instant;

use async_nats::HeaderMap;
use presence_engine::{Manifest, StoreError, StoreErrorKind};

use crate::api::{created_meanwhile, retrying, Api, Failure, MsgGet, Runtime, ERR_WRONG_LAST_SEQUENCE};
use crate::layout::{validate_stream_name, NATS_EXPECTED_LAST_SEQ};
use crate::options::NatsOptions;
use crate::store::connect;

/// The stream of shard `index` of deployment `name`.
pub fn shard_stream(name: &str, index: u32) -> String {
    format!("{name}-{index:03}")
}

/// The stream holding the manifest of deployment `name`.
pub fn manifest_stream(name: &str) -> String {
    format!("{name}-deployment")
}

/// Opens the deployment `name` on the NATS servers of `options` (its `stream` is ignored; its
/// `replicas` and `create` apply to the manifest's stream), creating its manifest with
/// `shards` shards if there is none. Returns the shard count.
///
/// With `shards` given, an existing deployment must have that many
/// ([`StoreErrorKind::Contract`] otherwise: a user's shard is fixed when the deployment is
/// created); with `None` it reads the count and creates nothing. Two nodes that create the
/// same deployment at once agree: the manifest is written fenced, and the loser reads the
/// winner's.
pub fn open_nats_deployment(
    options: &NatsOptions,
    name: &str,
    shards: Option<u32>,
) -> Result<u32, StoreError> {
    let stream = manifest_stream(name);
    validate_stream_name(&shard_stream(name, 0))?;
    validate_stream_name(&stream)?;
    let options = NatsOptions { stream: stream.clone(), ..options.clone() };
    let runtime = Runtime::new()?;
    let client = runtime.block_on(connect(&options))??;
    let api = Api::new(client, &stream, options.request_timeout);
    let subject = format!("{stream}.manifest");
    let io = |what: &str, failure: &Failure| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("cannot {what} of deployment {name} at {}: {failure}", options.url),
        )
    };
    let deadline = Instant::now() + options.operation_timeout;
    loop {
        let info = match runtime.block_on(retrying(deadline, || api.info(None)))? {
            Ok(info) => info,
            Err(f) if f.err_code() == Some(crate::api::ERR_STREAM_NOT_FOUND) => {
                if !options.create || shards.is_none() {
                    return Err(StoreError::new(
                        StoreErrorKind::Contract,
                        format!("no deployment {name} at {} (no stream {stream})", options.url),
                    ));
                }
                let subjects = [subject.clone()];
                match runtime.block_on(retrying(deadline, || api.create(&subjects, options.replicas)))? {
                    Ok(info) => info,
                    // Another node made it at the same moment: read it (a real overlap with
                    // another stream's subjects gives up at the deadline).
                    Err(f) if created_meanwhile(&f) && Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    Err(f) => return Err(io("create the manifest's stream", &f)),
                }
            }
            Err(f) => return Err(io("read the manifest's stream", &f)),
        };
        // An empty stream holds no manifest yet, so there is nothing to read; and it may be
        // one another node is still creating, which nats-server 2.9 must not be asked for a
        // message: a `MSG.GET` on a stream mid-creation crashed it (a Go panic in
        // jsMsgGetRequest, seen in the cluster traces when two nodes start together). A
        // stream that holds a message was made whole.
        let request = MsgGet::last(&subject);
        let last = match info.state.last_seq {
            0 => Ok(None),
            _ => runtime.block_on(retrying(deadline, || api.get(&request)))?,
        };
        match last {
            Ok(Some(msg)) => {
                let text = String::from_utf8_lossy(&msg.payload);
                let manifest = Manifest::parse(&text)
                    .map_err(|e| StoreError::new(e.kind(), format!("deployment {name}: {}", e.message())))?;
                if let Some(shards) = shards {
                    manifest.check(shards).map_err(|e| {
                        StoreError::new(e.kind(), format!("deployment {name}: {}", e.message()))
                    })?;
                }
                return Ok(manifest.shards);
            }
            Ok(None) => {}
            Err(f) => return Err(io("read the manifest", &f)),
        }
        let Some(shards) = shards.filter(|&s| s >= 1) else {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!("deployment {name} has no manifest yet, and no shard count was given to create it"),
            ));
        };
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SEQ, info.state.last_seq.to_string().as_str());
        let text = Manifest { shards }.to_text();
        match runtime
            .block_on(retrying(deadline, || api.publish(&subject, headers.clone(), text.as_bytes())))?
        {
            Ok(_) => return Ok(shards),
            // Another node wrote one first: read it.
            Err(Failure::Refused(e)) if e.err_code == ERR_WRONG_LAST_SEQUENCE => continue,
            Err(f) => return Err(io("write the manifest", &f)),
        }
    }
}
