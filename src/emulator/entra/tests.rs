use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;
use crate::emulator::tls::rsa_client_certificate;

use crate::emulator::azure::TENANT;
const SCOPE: &str = "https://monitor.azure.com/.default";

struct Fixture {
    entra: EntraHandle,
    http: reqwest::Client,
    cert_key_pem: String,
}

async fn fixture() -> Fixture {
    let cert = rsa_client_certificate("promlink-test-app").expect("rsa cert");
    let config = EntraConfig {
        clients: vec![
            RegisteredClient::with_secret(TENANT, "secret-app", "s3cret"),
            RegisteredClient::with_certificate(TENANT, "cert-app", &cert.cert_pem),
            RegisteredClient::with_federated_token(TENANT, "wi-app", "k8s-sa-token"),
        ],
        managed_identities: vec![
            ManagedIdentity::system_assigned(TENANT, "system-mi"),
            ManagedIdentity::user_assigned(TENANT, "user-mi"),
        ],
        ..EntraConfig::default()
    };
    let entra = EntraEmulator::start(config)
        .await
        .expect("start entra emulator");
    let ca = reqwest::Certificate::from_pem(entra.ca_pem().as_bytes()).expect("ca pem");
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .expect("client");
    Fixture {
        entra,
        http,
        cert_key_pem: cert.key_pem,
    }
}

impl Fixture {
    async fn post(&self, tenant: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(self.entra.token_url(tenant))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let json = serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    fn assertion(&self, alg: Algorithm, claims: serde_json::Value) -> String {
        let key = EncodingKey::from_rsa_pem(self.cert_key_pem.as_bytes()).expect("rsa key");
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign assertion")
    }

    fn assertion_claims(&self, aud: &str, exp_offset: i64) -> serde_json::Value {
        let now = now_secs();
        serde_json::json!({
            "aud": aud, "iss": "cert-app", "sub": "cert-app", "jti": "1",
            "nbf": now - 5, "iat": now - 5, "exp": now.saturating_add_signed(exp_offset),
        })
    }

    async fn mi(&self, header: Option<&str>, query: &str) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .get(format!("{}?{query}", self.entra.identity_endpoint()))
            .header("metadata", "true");
        if let Some(h) = header {
            req = req.header("x-identity-header", h);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                .unwrap_or(serde_json::Value::Null),
        )
    }
}

fn secret_form<'a>(client: &'a str, secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client),
        ("client_secret", secret),
        ("scope", scope),
    ]
}

#[tokio::test]
async fn emulator_entra_client_secret_issues_verifiable_token() {
    let f = fixture().await;
    let (status, json) = f
        .post(TENANT, &secret_form("secret-app", "s3cret", SCOPE))
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 3600);
    let token = json["access_token"].as_str().expect("access_token");
    let claims = f.entra.verify(token).expect("verifies");
    assert_eq!(claims.aud, "https://monitor.azure.com");
    assert_eq!(claims.appid, "secret-app");
    assert_eq!(claims.oid, "oid-secret-app");
    assert_eq!(claims.tid, TENANT);
    assert_eq!(f.entra.issued("secret-app"), 1);
    // Prometheus' double-slash scope is accepted too.
    let (status, json) = f
        .post(
            TENANT,
            &secret_form(
                "secret-app",
                "s3cret",
                "https://monitor.azure.com//.default",
            ),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert!(f
        .entra
        .verify(json["access_token"].as_str().unwrap_or_default())
        .is_ok());
    f.entra.shutdown().await;
}

#[tokio::test]
async fn emulator_entra_rejections_have_entra_status_and_code() {
    let f = fixture().await;
    // (name, tenant, form, status, error, AADSTS code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown tenant",
            "other-tenant",
            secret_form("secret-app", "s3cret", SCOPE),
            400,
            "invalid_request",
            "AADSTS90002",
        ),
        (
            "unknown client",
            TENANT,
            secret_form("nobody", "s3cret", SCOPE),
            400,
            "unauthorized_client",
            "AADSTS700016",
        ),
        (
            "wrong secret",
            TENANT,
            secret_form("secret-app", "nope", SCOPE),
            401,
            "invalid_client",
            "AADSTS7000215",
        ),
        (
            "secret for a cert app",
            TENANT,
            secret_form("cert-app", "s3cret", SCOPE),
            401,
            "invalid_client",
            "AADSTS7000215",
        ),
        (
            "scope without .default",
            TENANT,
            secret_form("secret-app", "s3cret", "https://monitor.azure.com"),
            400,
            "invalid_scope",
            "AADSTS1002012",
        ),
        (
            "two scopes",
            TENANT,
            secret_form(
                "secret-app",
                "s3cret",
                "https://monitor.azure.com/.default openid",
            ),
            400,
            "invalid_scope",
            "AADSTS1002012",
        ),
        (
            "unknown resource",
            TENANT,
            secret_form("secret-app", "s3cret", "https://vault.azure.net/.default"),
            400,
            "invalid_resource",
            "AADSTS500011",
        ),
        (
            "no grant_type",
            TENANT,
            vec![
                ("client_id", "secret-app"),
                ("client_secret", "s3cret"),
                ("scope", SCOPE),
            ],
            400,
            "invalid_request",
            "AADSTS900144",
        ),
        (
            "password grant",
            TENANT,
            vec![
                ("grant_type", "password"),
                ("client_id", "secret-app"),
                ("client_secret", "s3cret"),
                ("scope", SCOPE),
            ],
            400,
            "unsupported_grant_type",
            "AADSTS70003",
        ),
        (
            "no credential",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "secret-app"),
                ("scope", SCOPE),
            ],
            401,
            "invalid_client",
            "AADSTS7000218",
        ),
        (
            "no scope",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "secret-app"),
                ("client_secret", "s3cret"),
            ],
            400,
            "invalid_request",
            "AADSTS900144",
        ),
    ];
    for (name, tenant, form, status, error, code) in cases {
        let (got, json) = f.post(tenant, &form).await;
        assert_eq!(got, status, "{name}: {json}");
        assert_eq!(json["error"], error, "{name}: {json}");
        let description = json["error_description"].as_str().unwrap_or_default();
        assert!(description.starts_with(code), "{name}: {description}");
        assert!(json["error_codes"].is_array(), "{name}: {json}");
    }
    // Wrong content type.
    let resp = f
        .http
        .post(f.entra.token_url(TENANT))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(f.entra.stats().issued.is_empty());
    assert_eq!(f.entra.stats().rejected, 12);
    f.entra.shutdown().await;
}

#[tokio::test]
async fn emulator_entra_client_assertion_is_verified_against_the_certificate() {
    let f = fixture().await;
    let aud = f.entra.token_url(TENANT);
    let form = |assertion: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), "cert-app".into()),
            ("client_assertion_type".into(), JWT_BEARER.into()),
            ("client_assertion".into(), assertion.into()),
            ("scope".into(), SCOPE.into()),
        ]
    };
    let other = rsa_client_certificate("other").expect("other cert");
    let other_key = EncodingKey::from_rsa_pem(other.key_pem.as_bytes()).expect("key");
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &f.assertion_claims(&aud, 600),
        &other_key,
    )
    .expect("sign");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &f.assertion_claims(&aud, 600),
        &EncodingKey::from_secret(b"x"),
    )
    .expect("sign");
    let mut wrong_iss = f.assertion_claims(&aud, 600);
    wrong_iss["iss"] = "someone-else".into();
    let mut no_exp = f.assertion_claims(&aud, 600);
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "rs256",
            f.assertion(Algorithm::RS256, f.assertion_claims(&aud, 600)),
            200,
            "",
        ),
        (
            "ps256",
            f.assertion(Algorithm::PS256, f.assertion_claims(&aud, 600)),
            200,
            "",
        ),
        (
            "expired",
            f.assertion(Algorithm::RS256, f.assertion_claims(&aud, -10)),
            401,
            "AADSTS700024",
        ),
        (
            "wrong audience",
            f.assertion(
                Algorithm::RS256,
                f.assertion_claims("https://login.microsoftonline.com/x/oauth2/v2.0/token", 600),
            ),
            401,
            "AADSTS700021",
        ),
        ("signed by another key", forged, 401, "AADSTS700027"),
        ("hs256", hs, 401, "AADSTS5002738"),
        (
            "wrong issuer",
            f.assertion(Algorithm::RS256, wrong_iss),
            401,
            "AADSTS700023",
        ),
        (
            "no exp",
            f.assertion(Algorithm::RS256, no_exp),
            401,
            "AADSTS50027",
        ),
        ("not a jwt", "garbage".to_owned(), 401, "AADSTS50027"),
    ];
    for (name, assertion, status, code) in cases {
        let form = form(&assertion);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (got, json) = f.post(TENANT, &pairs).await;
        assert_eq!(got, status, "{name}: {json}");
        if status == 200 {
            let claims = f
                .entra
                .verify(json["access_token"].as_str().unwrap_or_default())
                .expect("verifies");
            assert_eq!(claims.appid, "cert-app");
        } else {
            assert_eq!(json["error"], "invalid_client", "{name}: {json}");
            let description = json["error_description"].as_str().unwrap_or_default();
            assert!(description.starts_with(code), "{name}: {description}");
        }
    }
    // Wrong assertion type.
    let assertion = f.assertion(Algorithm::RS256, f.assertion_claims(&aud, 600));
    let (got, _) = f
        .post(
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "cert-app"),
                ("client_assertion_type", "urn:something"),
                ("client_assertion", &assertion),
                ("scope", SCOPE),
            ],
        )
        .await;
    assert_eq!(got, 400);
    assert_eq!(f.entra.issued("cert-app"), 2);
    f.entra.shutdown().await;
}

#[tokio::test]
async fn emulator_entra_federated_assertion_must_match() {
    let f = fixture().await;
    let form = |token: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "wi-app"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", token),
            ("scope", SCOPE),
        ]
    };
    let (status, json) = f.post(TENANT, &form("k8s-sa-token")).await;
    assert_eq!(status, 200, "{json}");
    let (status, json) = f.post(TENANT, &form("another-token")).await;
    assert_eq!(status, 401, "{json}");
    assert!(json["error_description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("AADSTS70021"));
    assert_eq!(f.entra.issued("wi-app"), 1);
    f.entra.shutdown().await;
}

#[tokio::test]
async fn emulator_entra_managed_identity_endpoint() {
    let f = fixture().await;
    let header = f.entra.identity_header().to_owned();
    let resource = "resource=https%3A%2F%2Fmonitor.azure.com";
    let (status, json) = f
        .mi(Some(&header), &format!("api-version=2019-08-01&{resource}"))
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["resource"], "https://monitor.azure.com");
    let expires_on: u64 = json["expires_on"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expires_on string");
    assert!(expires_on > now_secs());
    let claims = f
        .entra
        .verify(json["access_token"].as_str().unwrap_or_default())
        .expect("verifies");
    assert_eq!(claims.appid, "system-mi");

    let (status, json) = f
        .mi(
            Some(&header),
            &format!("api-version=2019-08-01&{resource}&client_id=user-mi"),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    let claims = f
        .entra
        .verify(json["access_token"].as_str().unwrap_or_default())
        .expect("verifies");
    assert_eq!(claims.appid, "user-mi");
    let (status, _) = f
        .mi(
            Some(&header),
            &format!("api-version=2019-08-01&{resource}&object_id=oid-user-mi"),
        )
        .await;
    assert_eq!(status, 200);

    let cases = [
        (
            "no header",
            None,
            format!("api-version=2019-08-01&{resource}"),
            401,
        ),
        (
            "wrong header",
            Some("nope"),
            format!("api-version=2019-08-01&{resource}"),
            401,
        ),
        (
            "no api-version",
            Some(header.as_str()),
            resource.to_owned(),
            400,
        ),
        (
            "imds api-version",
            Some(header.as_str()),
            format!("api-version=2018-02-01&{resource}"),
            400,
        ),
        (
            "no resource",
            Some(header.as_str()),
            "api-version=2019-08-01".to_owned(),
            400,
        ),
        (
            "unknown resource",
            Some(header.as_str()),
            "api-version=2019-08-01&resource=https://vault.azure.net".to_owned(),
            400,
        ),
        (
            "unknown identity",
            Some(header.as_str()),
            format!("api-version=2019-08-01&{resource}&client_id=ghost"),
            400,
        ),
        (
            "two selectors",
            Some(header.as_str()),
            format!("api-version=2019-08-01&{resource}&client_id=user-mi&object_id=oid-user-mi"),
            400,
        ),
    ];
    for (name, h, query, status) in cases {
        let (got, json) = f.mi(h, &query).await;
        assert_eq!(got, status, "{name}: {json}");
    }
    assert_eq!(f.entra.issued("system-mi"), 1);
    assert_eq!(f.entra.issued("user-mi"), 2);
    f.entra.shutdown().await;
}

#[tokio::test]
async fn emulator_entra_injected_failures_come_first() {
    let f = fixture().await;
    f.entra.fail_next(2, 503);
    for _ in 0..2 {
        let (status, json) = f
            .post(TENANT, &secret_form("secret-app", "s3cret", SCOPE))
            .await;
        assert_eq!(status, 503);
        assert_eq!(json["error"], "temporarily_unavailable");
    }
    let (status, _) = f
        .post(TENANT, &secret_form("secret-app", "s3cret", SCOPE))
        .await;
    assert_eq!(status, 200);
    let stats = f.entra.stats();
    assert_eq!(stats.injected, 2);
    assert_eq!(stats.requests, 3);
    // Clients added and removed at run time.
    f.entra
        .add_client(RegisteredClient::with_secret(TENANT, "late-app", "x"));
    assert_eq!(
        f.post(TENANT, &secret_form("late-app", "x", SCOPE)).await.0,
        200
    );
    f.entra.remove_client(TENANT, "late-app");
    assert_eq!(
        f.post(TENANT, &secret_form("late-app", "x", SCOPE)).await.0,
        400
    );
    f.entra.shutdown().await;
}

#[test]
fn emulator_entra_verifier_checks_signature_expiry_and_audience() {
    let resources = vec!["https://monitor.azure.com".to_owned()];
    let verifier = TokenVerifier::new(&resources);
    let now = now_secs();
    let good = Claims::new(TENANT, "app", "oid", "https://monitor.azure.com", now, 600);
    let token = verifier.mint(&good).expect("mint");
    assert_eq!(verifier.verify(&token), Ok(good.clone()));
    let slash = Claims::new(TENANT, "app", "oid", "https://monitor.azure.com/", now, 600);
    assert!(verifier
        .verify(&verifier.mint(&slash).expect("mint"))
        .is_ok());

    let expired = Claims::new(
        TENANT,
        "app",
        "oid",
        "https://monitor.azure.com",
        now - 1000,
        10,
    );
    assert_eq!(
        verifier.verify(&verifier.mint(&expired).expect("mint")),
        Err("token is expired".to_owned())
    );
    let wrong_aud = Claims::new(TENANT, "app", "oid", "https://vault.azure.net", now, 600);
    assert!(verifier
        .verify(&verifier.mint(&wrong_aud).expect("mint"))
        .is_err());
    let other = TokenVerifier::new(&resources);
    assert!(
        other.verify(&token).is_err(),
        "another emulator's key must not verify"
    );
    let mut tampered = token.clone();
    tampered.push('x');
    assert!(verifier.verify(&tampered).is_err());
    assert!(verifier.verify("").is_err());
    assert!(verifier.verify("a.b.c").is_err());
}
