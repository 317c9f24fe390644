//! AWS Secrets Manager through the official SDK: `GetSecretValue`, with the
//! credentials, region and endpoint every AWS tool reads (`AWS_PROFILE`,
//! `AWS_ACCESS_KEY_ID`..., `AWS_REGION`, `AWS_ENDPOINT_URL`, instance roles).

use indexmap::IndexMap;
use runbook_core::model::AwsSecret;

/// Reads the secret (or its field `key`).
pub(crate) async fn fetch(a: &AwsSecret, env: &IndexMap<String, String>) -> Result<String, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &a.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    // The runner's environment, which may not be this process's (a worker
    // running a submitted run): the endpoint is the one setting that differs
    // in a lab or a VPC endpoint.
    if let Some(url) = env
        .get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
    {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("no region: set `region:` on the secret, AWS_REGION, or a profile's region".to_owned());
    }
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let mut request = client.get_secret_value().secret_id(&a.secret_id);
    if let Some(stage) = &a.version_stage {
        request = request.version_stage(stage);
    }
    let answer = request.send().await.map_err(|e| {
        let why = aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string();
        if why.contains("ResourceNotFoundException") {
            format!("no secret `{}` (check its name and the region)", a.secret_id)
        } else if why.contains("AccessDenied") {
            format!("access denied to `{}` (check the credentials' policy)", a.secret_id)
        } else {
            format!("`{}`: {why}", a.secret_id)
        }
    })?;
    let text = match (answer.secret_string(), answer.secret_binary()) {
        (Some(s), _) => s.to_owned(),
        (None, Some(b)) => String::from_utf8(b.as_ref().to_vec())
            .map_err(|_| format!("`{}` holds binary data that is not UTF-8", a.secret_id))?,
        (None, None) => return Err(format!("`{}` has no value", a.secret_id)),
    };
    match &a.key {
        Some(key) => crate::field(&text, key).map_err(|e| format!("`{}`: {e}", a.secret_id)),
        None => Ok(text),
    }
}
