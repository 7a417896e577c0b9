//! User keys and roles OpenSSH cannot read are refused, each judged against the real
//! `ssh-keygen`: what Warden takes, OpenSSH reads, and a certificate for it too.

use super::*;
use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
use std::path::Path;
use std::process::Command;
use time::macros::datetime;
use warden_domain::RequestId;

/// A public key line of type `kind` whose wire form holds `fields` after the type name.
fn key_line(kind: &str, fields: &[&[u8]]) -> String {
    use base64::Engine;
    let mut wire = Vec::new();
    for field in [kind.as_bytes()].iter().chain(fields) {
        wire.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(field);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
    format!("{kind} {b64} made")
}

/// An `ecdsa-sha2-*` key line holding the SEC1 `point` of `curve`.
fn ecdsa_line(curve: EcdsaCurve, point: &[u8]) -> String {
    let name = curve.as_str();
    key_line(&format!("ecdsa-sha2-{name}"), &[name.as_bytes(), point])
}

/// An `sk-ecdsa-sha2-nistp256@openssh.com` key line holding `point` and `application`.
fn sk_ecdsa_line(point: &[u8], application: &[u8]) -> String {
    key_line(
        "sk-ecdsa-sha2-nistp256@openssh.com",
        &[b"nistp256", point, application],
    )
}

/// An `sk-ssh-ed25519@openssh.com` key line holding `key` and `application`.
fn sk_ed25519_line(key: &[u8], application: &[u8]) -> String {
    key_line("sk-ssh-ed25519@openssh.com", &[key, application])
}

/// A fresh key pair's public point of `curve`, uncompressed, as ssh-keygen writes it.
fn real_point(curve: EcdsaCurve) -> Vec<u8> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ecdsa { curve }).unwrap();
    key.public_key()
        .key_data()
        .ecdsa()
        .unwrap()
        .as_sec1_bytes()
        .to_vec()
}

/// `point` (uncompressed) of `curve`, compressed.
fn compressed(curve: EcdsaCurve, point: &[u8]) -> Vec<u8> {
    match curve {
        EcdsaCurve::NistP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .unwrap()
            .to_sec1_point(true)
            .as_bytes()
            .to_vec(),
        EcdsaCurve::NistP384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .unwrap()
            .to_sec1_point(true)
            .as_bytes()
            .to_vec(),
        EcdsaCurve::NistP521 => p521::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .unwrap()
            .to_sec1_point(true)
            .as_bytes()
            .to_vec(),
    }
}

/// The uncompressed point of `curve` with x coordinate `x` and an even y, if there is one.
fn with_x(curve: EcdsaCurve, x: &[u8]) -> Option<Vec<u8>> {
    let c = [&[2u8][..], x].concat();
    match curve {
        EcdsaCurve::NistP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&c)
            .ok()
            .map(|k| k.to_sec1_point(false).as_bytes().to_vec()),
        EcdsaCurve::NistP384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(&c)
            .ok()
            .map(|k| k.to_sec1_point(false).as_bytes().to_vec()),
        EcdsaCurve::NistP521 => p521::ecdsa::VerifyingKey::from_sec1_bytes(&c)
            .ok()
            .map(|k| k.to_sec1_point(false).as_bytes().to_vec()),
    }
}

/// The first point of `curve` whose x coordinate is `x` or, stepping by one (`up` or down),
/// the nearest beyond it.
fn point_from(curve: EcdsaCurve, mut x: Vec<u8>, up: bool) -> Vec<u8> {
    loop {
        if let Some(point) = with_x(curve, &x) {
            return point;
        }
        // One step, with carry or borrow.
        for b in x.iter_mut().rev() {
            let (v, over) = if up {
                b.overflowing_add(1)
            } else {
                b.overflowing_sub(1)
            };
            *b = v;
            if !over {
                break;
            }
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Each curve, the width of a coordinate, and its group order (as `openssl ecparam
/// -param_enc explicit -text` prints it), as wide as a coordinate.
fn curves() -> [(EcdsaCurve, usize, Vec<u8>); 3] {
    [
        (
            EcdsaCurve::NistP256,
            32,
            hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"),
        ),
        (
            EcdsaCurve::NistP384,
            48,
            hex(
                "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
            ),
        ),
        (
            EcdsaCurve::NistP521,
            66,
            hex(
                "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
            ),
        ),
    ]
}

/// Whether the real `ssh-keygen` reads `text`: with `-L` as a certificate, else with `-l` as a
/// public key.
fn openssh_reads(text: &str, certificate: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(if certificate { "k-cert.pub" } else { "k.pub" });
    std::fs::write(&path, format!("{text}\n")).unwrap();
    ssh_keygen(if certificate { "-L" } else { "-l" }, &path)
}

fn ssh_keygen(flag: &str, path: &Path) -> bool {
    let out = Command::new("ssh-keygen")
        .arg(flag)
        .arg("-f")
        .arg(path)
        .output()
        .expect("ssh-keygen (OpenSSH) is needed to check what it reads");
    out.status.success()
}

/// The certificate a grant of a role with `principals` gets for `key`, as a requester would.
async fn certificate(key: &str, principals: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = UserCa::load_or_create(&dir.path().join("ca")).unwrap();
    let issuer = SshCertIssuer::new(ca);
    let role: Settings = serde_json::json!({ "principals": principals })
        .as_object()
        .cloned()
        .unwrap();
    let holder = Holder::Requester(Recording::Metadata);
    issuer.check_request(&role, Some(key), holder).unwrap();
    let out = issuer
        .issue(IssueRequest {
            grant: RequestId::from_uuid(uuid::Uuid::from_u128(0x5eed)),
            user: &"alice".parse().unwrap(),
            target: &"web".parse().unwrap(),
            role: &"admin".parse().unwrap(),
            connection: &Settings::new(),
            settings: &role,
            valid_after: datetime!(2026-01-01 10:00 UTC),
            valid_before: datetime!(2026-01-01 11:00 UTC),
            public_key: Some(key),
            account: None,
            password: None,
            admin: None,
            holder,
        })
        .await
        .unwrap();
    out.public["certificate"].as_str().unwrap().to_owned()
}

/// `key` is taken, OpenSSH reads it, and reads the certificate a grant gets for it.
async fn taken_and_read(key: &str) {
    assert!(user_key(key).is_ok(), "{key}: {:?}", user_key(key));
    assert!(openssh_reads(key, false), "ssh-keygen does not read {key}");
    let cert = certificate(key, &["root".to_owned()]).await;
    assert!(
        openssh_reads(&cert, true),
        "ssh-keygen does not read {cert}"
    );
}

/// `key` is refused with a message holding `said` and never the key itself, and OpenSSH does
/// not read it either.
fn refused_as_openssh_refuses(key: &str, said: &str) {
    refused(key, said);
    assert!(!openssh_reads(key, false), "ssh-keygen reads {key}");
}

/// `key` is refused with a message holding `said` and never the key's data.
fn refused(key: &str, said: &str) {
    let why = user_key(key).unwrap_err();
    assert!(why.contains(said), "{key}: {why}");
    let data = key.split(' ').nth(1).unwrap();
    assert!(!why.contains(data), "{why}");
}

#[tokio::test]
async fn compressed_ecdsa_points_are_refused_as_openssh_refuses_them() {
    for (curve, _, _) in curves() {
        let point = real_point(curve);
        taken_and_read(&ecdsa_line(curve, &point)).await;
        let short = compressed(curve, &point);
        assert_eq!(short.len(), point.len() / 2 + 1);
        refused_as_openssh_refuses(&ecdsa_line(curve, &short), "compressed");
    }
}

#[tokio::test]
async fn ecdsa_points_openssh_refuses_are_refused() {
    for (curve, width, order) in curves() {
        let order_bits = modulus_bits(&order);
        let half = usize::try_from(order_bits / 2).unwrap();
        // x with exactly `half` bits, and with one more.
        let power = |bits: usize| {
            let mut x = vec![0u8; width];
            x[width - 1 - bits / 8] = 1 << (bits % 8);
            x
        };
        let small = point_from(curve, power(half - 1), true);
        assert_eq!(modulus_bits(&small[1..=width]), order_bits / 2);
        refused_as_openssh_refuses(&ecdsa_line(curve, &small), "OpenSSH refuses");
        let enough = point_from(curve, power(half), true);
        taken_and_read(&ecdsa_line(curve, &enough)).await;
        // x of the order less one or more; x below it.
        let mut last = order.clone();
        *last.last_mut().unwrap() -= 1;
        let high = point_from(curve, last.clone(), true);
        assert!(high[1..=width] >= last[..]);
        refused_as_openssh_refuses(&ecdsa_line(curve, &high), "OpenSSH refuses");
        let mut below = last;
        *below.last_mut().unwrap() -= 1;
        let below = point_from(curve, below, false);
        taken_and_read(&ecdsa_line(curve, &below)).await;
        // Off the curve.
        let mut off = real_point(curve);
        *off.last_mut().unwrap() ^= 1;
        refused_as_openssh_refuses(&ecdsa_line(curve, &off), "not a point of its curve");
    }
    // The same of y, on P-256 (points found with a cubic's roots): 128 bits, 129, the order
    // less one, and more.
    for (line, taken) in [
        (
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOTI1gV750QBfQeF6/rIUhm1u9uW0UIdN3U+HJdkeXHZAAAAAAAAAAAAAAAAAAAAAIAAAAAAAAAAAAAAAAAAAAE= t",
            false,
        ),
        (
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGq+2t7I7Ulfj76IGCRwNSfOPv/ri8VRK8fq/7ZEBjYdAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAA= t",
            true,
        ),
        (
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOWyvCvTe5ehP9TUqlhwe6BF3v887H5vdNk6SBZ76vsN/////wAAAAD//////////7zm+q2nF56E87nKwvxjJVA= t",
            false,
        ),
        (
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA4eIEOkZjjjJ43N2quGQapv6a/pi5qmZwUHREY6KIwX/////wAAAAD//////////7zm+q2nF56E87nKwvxjKTk= t",
            false,
        ),
    ] {
        if taken {
            taken_and_read(line).await;
        } else {
            refused_as_openssh_refuses(line, "OpenSSH refuses");
        }
    }
}

#[tokio::test]
async fn security_key_ecdsa_points_are_checked_as_ecdsa_points() {
    let curve = EcdsaCurve::NistP256;
    let point = real_point(curve);
    taken_and_read(&sk_ecdsa_line(&point, b"ssh:")).await;
    refused_as_openssh_refuses(
        &sk_ecdsa_line(&compressed(curve, &point), b"ssh:"),
        "compressed",
    );
    let mut off = point.clone();
    *off.last_mut().unwrap() ^= 1;
    refused_as_openssh_refuses(&sk_ecdsa_line(&off, b"ssh:"), "not a point of its curve");
    refused_as_openssh_refuses(&sk_ecdsa_line(&[0], b"ssh:"), "not a point of its curve");
    let mut small = vec![0u8; 32];
    small[31] = 1;
    let small = point_from(curve, small, true);
    refused_as_openssh_refuses(&sk_ecdsa_line(&small, b"ssh:"), "OpenSSH refuses");
}

#[tokio::test]
async fn security_key_application_strings_are_checked() {
    let ed = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let ed = ed.public_key().key_data().ed25519().unwrap().0;
    let point = real_point(EcdsaCurve::NistP256);
    let lines = |application: &[u8]| {
        [
            sk_ed25519_line(&ed, application),
            sk_ecdsa_line(&point, application),
        ]
    };
    for application in [&b"ssh:"[..], b"ssh:work", "ssh:clé".as_bytes()] {
        for line in lines(application) {
            taken_and_read(&line).await;
        }
    }
    // Refused though OpenSSH reads them: a control or invisible character, named by its code
    // point and never quoted.
    for (application, said) in [
        (&b"ssh:\x1b[2J"[..], "a control character (U+001B)"),
        (b"\x1bssh:", "a control character (U+001B)"),
        (b"ssh:a\tb", "a control character (U+0009)"),
        (
            "ssh:\u{202e}x".as_bytes(),
            "an invisible or text-reordering character (U+202E)",
        ),
    ] {
        for line in lines(application) {
            refused(&line, said);
            assert!(!user_key(&line).unwrap_err().contains("[2J"));
            assert!(openssh_reads(&line, false), "{line}");
        }
    }
    // Not begun `ssh:`, as no key ssh-keygen makes is; OpenSSH reads them too.
    for application in [&b""[..], b"ssh", b"SSH:", b"web:", b"https://example.com"] {
        for line in lines(application) {
            refused(&line, "does not begin with \"ssh:\"");
            assert!(openssh_reads(&line, false), "{line}");
        }
    }
    // A NUL byte, which OpenSSH does not read.
    for line in lines(b"ssh:\0x") {
        refused_as_openssh_refuses(&line, "a control character (U+0000)");
    }
}

#[tokio::test]
async fn a_role_with_more_principals_than_a_certificate_holds_is_refused() {
    let accounts = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let role = |principals: &[String]| -> Settings {
        serde_json::json!({ "principals": principals })
            .as_object()
            .cloned()
            .unwrap()
    };
    // The most OpenSSH reads: taken, and its certificate read.
    let most = accounts(MAX_PRINCIPALS);
    assert!(check_role(&role(&most)).is_empty());
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let key = key.public_key().to_openssh().unwrap();
    let cert = certificate(&key, &most).await;
    assert_eq!(
        ssh_key::Certificate::from_openssh(&cert)
            .unwrap()
            .valid_principals()
            .len(),
        MAX_PRINCIPALS
    );
    assert!(openssh_reads(&cert, true));
    // One more is refused at the setting, as a repeated extension is, naming the limit.
    let more = accounts(MAX_PRINCIPALS + 1);
    assert_eq!(
        check_role(&role(&more)),
        [SettingProblem {
            key: Some("principals".into()),
            message: "the role lists 257 principals, but OpenSSH refuses a certificate naming more than 256, so no grant of such a role could log in: split its accounts between roles of at most 256 each".into(),
        }]
    );
    let why = role_settings(&role(&more)).unwrap_err().to_string();
    assert!(why.contains("more than 256"), "{why}");
    // As OpenSSH does: a certificate naming 257 is not read.
    let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let user = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let mut builder =
        Builder::new_with_random_nonce(&mut rand::rng(), user.public_key(), 0, u64::MAX).unwrap();
    builder.cert_type(CertType::User).unwrap();
    for p in &more {
        builder.valid_principal(p.clone()).unwrap();
    }
    let too_many = builder.sign(&ca).unwrap().to_openssh().unwrap();
    assert!(!openssh_reads(&too_many, true));
    // A repeat is dropped before counting: 256 accounts, one listed twice, are taken.
    let mut repeated = most;
    repeated.push("u0".into());
    assert!(check_role(&role(&repeated)).is_empty());
}

#[test]
fn a_key_type_openssh_does_not_know_is_refused() {
    for line in [
        key_line("foo@example.com", &[b"abc"]),
        key_line("mldsa65@example.org", &[&[7; 64]]),
    ] {
        refused_as_openssh_refuses(&line, "not one OpenSSH reads");
    }
}
