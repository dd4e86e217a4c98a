//! Tests of the groups room that need no network: the body a copy is sealed as.

use super::*;

#[test]
fn a_copy_seals_as_the_group_message_it_holds_and_garbage_is_refused() {
    let message = GroupMessage {
        group: [1; 16],
        body: GroupBody::Text { id: [2; 16], seq: 1, heads: vec![], text: "hi".into() },
    };
    let encoded = codec::encode(&message).unwrap();
    assert_eq!(body(&encoded).unwrap(), Body::Group(message));
    assert!(body(&encoded[..encoded.len() - 1]).is_err());
    assert!(body(&[0xff; 8]).is_err());
}
