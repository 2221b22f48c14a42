//! Byte-level checks of the `aegis.cluster.v1` wire format.
//!
//! The real AEGIS edge daemon was built from its own copy of the cluster
//! contract, so it only understands us if every field number, wire type and
//! oneof tag in `proto/aegis_cluster.proto` matches `protocol.md` §3 exactly.
//! A round trip through our own generated code cannot catch a renumbered
//! field (both sides would agree with each other and still disagree with the
//! daemon), so these tests compare against byte strings worked out by hand.
//!
//! Reading the comments: a tag byte is `(field_number << 3) | wire_type`,
//! where wire type 0 is a varint and 2 is length-delimited (strings, bytes,
//! nested messages, map entries). prost writes fields in ascending field
//! number order and skips proto3 scalars holding their default value.

use std::collections::HashMap;

use prost::Message;

use aegis_relay::proto::cluster::{
    challenge_node_request, edge_command, edge_event, AttestNodeRequest, CancelCommand,
    CapabilityUpdateEvent, ChallengeNodeRequest, CommandProgressEvent, CommandResultEvent,
    EdgeCapabilities, EdgeCommand, EdgeDrainCommand, EdgeEvent, EdgePushConfigCommand, EdgeResult,
    EdgeShutdownCommand, HeartbeatEvent, HelloEvent, InvokeToolCommand, NodeCapabilities, NodeRole,
    SealEnvelope, SealNodeEnvelope,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Encodes `msg`, compares it with `expected`, and checks that decoding the
/// expected bytes gives the same message back.
fn assert_wire<M>(msg: &M, expected: &[u8]) -> TestResult
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    assert_eq!(msg.encode_to_vec(), expected, "encoding of {msg:?}");
    let decoded = M::decode(expected)?;
    assert_eq!(&decoded, msg, "decoding of {expected:02x?}");
    Ok(())
}

fn edge_event(event: edge_event::Event) -> EdgeEvent {
    EdgeEvent { event: Some(event) }
}

fn edge_command(command: edge_command::Command) -> EdgeCommand {
    EdgeCommand {
        command: Some(command),
    }
}

#[test]
fn edge_event_oneof_tags() -> TestResult {
    // hello = 1: an empty HelloEvent is still present, so it is written as a
    // zero-length field.
    assert_wire(
        &edge_event(edge_event::Event::Hello(HelloEvent::default())),
        &[
            0x0a, 0x00, // field 1 (hello), wire type 2, length 0
        ],
    )?;

    // heartbeat = 2, carrying active_invocations = 3.
    assert_wire(
        &edge_event(edge_event::Event::Heartbeat(HeartbeatEvent {
            envelope: None,
            active_invocations: 3,
        })),
        &[
            0x12, 0x02, // field 2 (heartbeat), wire type 2, length 2
            0x10, 0x03, //   field 2 (active_invocations), varint 3
        ],
    )?;

    // command_result = 3, carrying command_id "c" and result { ok: true }.
    assert_wire(
        &edge_event(edge_event::Event::CommandResult(CommandResultEvent {
            envelope: None,
            command_id: "c".to_owned(),
            result: Some(EdgeResult {
                ok: true,
                ..EdgeResult::default()
            }),
        })),
        &[
            0x1a, 0x07, // field 3 (command_result), wire type 2, length 7
            0x12, 0x01, 0x63, //   field 2 (command_id), length 1, "c"
            0x1a, 0x02, //   field 3 (result), wire type 2, length 2
            0x08, 0x01, //     field 1 (ok), varint 1 = true
        ],
    )?;

    // command_progress = 4, carrying sequence = 7.
    assert_wire(
        &edge_event(edge_event::Event::CommandProgress(CommandProgressEvent {
            sequence: 7,
            ..CommandProgressEvent::default()
        })),
        &[
            0x22, 0x02, // field 4 (command_progress), wire type 2, length 2
            0x20, 0x07, //   field 4 (sequence), varint 7
        ],
    )?;

    // capability_update = 5, carrying capabilities { os: "linux" }.
    assert_wire(
        &edge_event(edge_event::Event::CapabilityUpdate(CapabilityUpdateEvent {
            envelope: None,
            capabilities: Some(EdgeCapabilities {
                os: "linux".to_owned(),
                ..EdgeCapabilities::default()
            }),
        })),
        &[
            0x2a, 0x09, // field 5 (capability_update), wire type 2, length 9
            0x12, 0x07, //   field 2 (capabilities), wire type 2, length 7
            0x0a, 0x05, //     field 1 (os), length 5
            0x6c, 0x69, 0x6e, 0x75, 0x78, // "linux"
        ],
    )?;

    // No variant set: nothing at all on the wire.
    assert_wire(&EdgeEvent { event: None }, &[])?;
    Ok(())
}

#[test]
fn edge_command_oneof_tags() -> TestResult {
    // invoke_tool = 1, carrying tool_name "sh".
    assert_wire(
        &edge_command(edge_command::Command::InvokeTool(InvokeToolCommand {
            tool_name: "sh".to_owned(),
            ..InvokeToolCommand::default()
        })),
        &[
            0x0a, 0x04, // field 1 (invoke_tool), wire type 2, length 4
            0x22, 0x02, //   field 4 (tool_name), length 2
            0x73, 0x68, //   "sh"
        ],
    )?;

    // cancel = 2, carrying command_id "c".
    assert_wire(
        &edge_command(edge_command::Command::Cancel(CancelCommand {
            command_id: "c".to_owned(),
        })),
        &[
            0x12, 0x03, // field 2 (cancel), wire type 2, length 3
            0x0a, 0x01, 0x63, //   field 1 (command_id), length 1, "c"
        ],
    )?;

    // push_config = 3, carrying an empty merged_config_delta Struct.
    assert_wire(
        &edge_command(edge_command::Command::PushConfig(EdgePushConfigCommand {
            merged_config_delta: Some(prost_types::Struct::default()),
        })),
        &[
            0x1a, 0x02, // field 3 (push_config), wire type 2, length 2
            0x0a, 0x00, //   field 1 (merged_config_delta), length 0
        ],
    )?;

    // drain = 4: the message has no fields.
    assert_wire(
        &edge_command(edge_command::Command::Drain(EdgeDrainCommand {})),
        &[
            0x22, 0x00, // field 4 (drain), wire type 2, length 0
        ],
    )?;

    // shutdown = 5: the message has no fields.
    assert_wire(
        &edge_command(edge_command::Command::Shutdown(EdgeShutdownCommand {})),
        &[
            0x2a, 0x00, // field 5 (shutdown), wire type 2, length 0
        ],
    )?;

    assert_wire(&EdgeCommand { command: None }, &[])?;
    Ok(())
}

#[test]
fn seal_node_envelope_fields() -> TestResult {
    let envelope = SealNodeEnvelope {
        node_security_token: "tok".to_owned(),
        signature: vec![0x01, 0x02],
        payload: vec![0xff],
    };
    assert_wire(
        &envelope,
        &[
            0x0a, 0x03, // field 1 (node_security_token, string), length 3
            0x74, 0x6f, 0x6b, // "tok"
            0x12, 0x02, // field 2 (signature, bytes), length 2
            0x01, 0x02, //
            0x1a, 0x01, // field 3 (payload, bytes), length 1
            0xff, //
        ],
    )
}

fn sample_hello() -> HelloEvent {
    HelloEvent {
        envelope: Some(SealNodeEnvelope {
            node_security_token: "t".to_owned(),
            signature: vec![0x01],
            payload: vec![0x02],
        }),
        capabilities: Some(EdgeCapabilities {
            os: "linux".to_owned(),
            arch: "x86_64".to_owned(),
            local_tools: vec!["sh".to_owned()],
            custom_labels: HashMap::from([("zone".to_owned(), "a".to_owned())]),
            ..EdgeCapabilities::default()
        }),
        stream_id: "s1".to_owned(),
        last_seen_command_id: Some("c9".to_owned()),
    }
}

/// Hand-encoded `sample_hello()`: 51 bytes.
const SAMPLE_HELLO_BYTES: &[u8] = &[
    0x0a, 0x09, // field 1 (envelope), wire type 2, length 9
    0x0a, 0x01, 0x74, //   field 1 (node_security_token), length 1, "t"
    0x12, 0x01, 0x01, //   field 2 (signature), length 1, [0x01]
    0x1a, 0x01, 0x02, //   field 3 (payload), length 1, [0x02]
    0x12, 0x1e, // field 2 (capabilities), wire type 2, length 30
    0x0a, 0x05, //   field 1 (os), length 5
    0x6c, 0x69, 0x6e, 0x75, 0x78, // "linux"
    0x12, 0x06, //   field 2 (arch), length 6
    0x78, 0x38, 0x36, 0x5f, 0x36, 0x34, // "x86_64"
    0x1a, 0x02, //   field 3 (local_tools, one element), length 2
    0x73, 0x68, // "sh"
    0x2a, 0x09, //   field 5 (custom_labels, one map entry message), length 9
    0x0a, 0x04, //     entry field 1 (key), length 4
    0x7a, 0x6f, 0x6e, 0x65, // "zone"
    0x12, 0x01, 0x61, //     entry field 2 (value), length 1, "a"
    0x1a, 0x02, // field 3 (stream_id), length 2
    0x73, 0x31, // "s1"
    0x22, 0x02, // field 4 (last_seen_command_id), length 2
    0x63, 0x39, // "c9"
];

#[test]
fn hello_event_fields() -> TestResult {
    assert_eq!(SAMPLE_HELLO_BYTES.len(), 51);
    assert_wire(&sample_hello(), SAMPLE_HELLO_BYTES)?;

    // The same HelloEvent as the first message of a ConnectEdge stream.
    let mut wrapped = vec![
        0x0a, 0x33, // field 1 (hello), wire type 2, length 51
    ];
    wrapped.extend_from_slice(SAMPLE_HELLO_BYTES);
    assert_wire(
        &edge_event(edge_event::Event::Hello(sample_hello())),
        &wrapped,
    )?;
    Ok(())
}

#[test]
fn hello_event_optional_last_seen_command_id() -> TestResult {
    // proto3 `optional`: unset writes nothing ...
    assert_wire(
        &HelloEvent {
            last_seen_command_id: None,
            ..HelloEvent::default()
        },
        &[],
    )?;
    // ... while an explicitly set empty string is still written.
    assert_wire(
        &HelloEvent {
            last_seen_command_id: Some(String::new()),
            ..HelloEvent::default()
        },
        &[
            0x22, 0x00, // field 4 (last_seen_command_id), length 0
        ],
    )?;
    Ok(())
}

#[test]
fn invoke_tool_command_fields() -> TestResult {
    let args = prost_types::Struct {
        fields: [(
            "cmd".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("ls".to_owned())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let command = InvokeToolCommand {
        command_id: "c1".to_owned(),
        security_context_name: "ctx".to_owned(),
        seal_envelope: Some(SealEnvelope {
            user_security_token: "u".to_owned(),
            tenant_id: "t".to_owned(),
            security_context_name: "ctx".to_owned(),
            payload: None,
            signature: Vec::new(),
        }),
        tool_name: "sh".to_owned(),
        args: Some(args),
        deadline: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
    };
    let expected: &[u8] = &[
        0x0a, 0x02, // field 1 (command_id), length 2
        0x63, 0x31, // "c1"
        0x12, 0x03, // field 2 (security_context_name), length 3
        0x63, 0x74, 0x78, // "ctx"
        0x1a, 0x0b, // field 3 (seal_envelope), wire type 2, length 11
        0x0a, 0x01, 0x75, //   field 1 (user_security_token), length 1, "u"
        0x12, 0x01, 0x74, //   field 2 (tenant_id), length 1, "t"
        0x1a, 0x03, //   field 3 (security_context_name), length 3
        0x63, 0x74, 0x78, // "ctx"
        0x22, 0x02, // field 4 (tool_name), length 2
        0x73, 0x68, // "sh"
        0x2a, 0x0d, // field 5 (args: google.protobuf.Struct), length 13
        0x0a, 0x0b, //   Struct field 1 (fields, one map entry), length 11
        0x0a, 0x03, //     entry field 1 (key), length 3
        0x63, 0x6d, 0x64, // "cmd"
        0x12, 0x04, //     entry field 2 (value: google.protobuf.Value), length 4
        0x1a, 0x02, //       Value field 3 (string_value), length 2
        0x6c, 0x73, // "ls"
        0x32, 0x02, // field 6 (deadline: google.protobuf.Duration), length 2
        0x08, 0x1e, //   Duration field 1 (seconds), varint 30; nanos 0 omitted
    ];
    assert_eq!(expected.len(), 45);
    assert_wire(&command, expected)
}

#[test]
fn decode_command_progress_event() -> TestResult {
    let bytes: &[u8] = &[
        0x12, 0x02, // field 2 (command_id), length 2
        0x63, 0x31, // "c1"
        0x1a, 0x03, // field 3 (chunk, bytes), length 3
        0x6f, 0x6b, 0x0a, // "ok\n"
        0x20, 0x96, 0x01, // field 4 (sequence), two-byte varint 150
        0x28, 0x01, // field 5 (stderr), varint 1 = true
    ];
    let event = CommandProgressEvent::decode(bytes)?;
    assert_eq!(event.envelope, None);
    assert_eq!(event.command_id, "c1");
    assert_eq!(event.chunk, b"ok\n".to_vec());
    assert_eq!(event.sequence, 150);
    assert!(event.stderr);
    // And back: prost produces exactly the same bytes.
    assert_eq!(event.encode_to_vec(), bytes);
    Ok(())
}

#[test]
fn decode_challenge_node_request() -> TestResult {
    let bytes: &[u8] = &[
        0x0a, 0x02, // field 1 (challenge_id), length 2
        0x69, 0x64, // "id"
        0x12, 0x01, 0x6e, // field 2 (node_id), length 1, "n"
        0x1a, 0x02, // field 3 (challenge_signature, bytes), length 2
        0x01, 0x02, //
        0x22, 0x03, // field 4 (oneof bootstrap_proof: enrollment_token), length 3
        0x6a, 0x77, 0x74, // "jwt"
    ];
    let request = ChallengeNodeRequest::decode(bytes)?;
    let expected = ChallengeNodeRequest {
        challenge_id: "id".to_owned(),
        node_id: "n".to_owned(),
        challenge_signature: vec![0x01, 0x02],
        bootstrap_proof: Some(challenge_node_request::BootstrapProof::EnrollmentToken(
            "jwt".to_owned(),
        )),
    };
    assert_eq!(request, expected);
    assert_eq!(request.encode_to_vec(), bytes);
    Ok(())
}

#[test]
fn attest_node_request_edge_role() -> TestResult {
    // What the daemon sends in AttestNode, reduced to the enum and the
    // "present but empty" capabilities (protocol.md §3.1 and §3.3).
    assert_wire(
        &AttestNodeRequest {
            role: NodeRole::Edge as i32,
            capabilities: Some(NodeCapabilities::default()),
            ..AttestNodeRequest::default()
        },
        &[
            0x10, 0x04, // field 2 (role), varint 4 = NODE_ROLE_EDGE
            0x22, 0x00, // field 4 (capabilities), wire type 2, length 0
        ],
    )
}
