//! Lambda entry point: configuration and the DynamoDB client are built once per cold start.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::time::Duration;

use telemetry_shared::config::Env;
use telemetry_shared::retry::Deadline;

const REPLY_MARGIN: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry_shared::logging::init_lambda();
    let config = post_process::Config::from_env(&Env::process())?;
    let sdk = telemetry_shared::aws::sdk_config().await?;
    let handler = post_process::from_config(&config, &sdk);
    let handler = &handler;
    lambda_runtime::run(service_fn(
        // The payload is read record by record (`read_window`): one unreadable record must
        // not fail the batch, which the mapping would retry forever.
        move |event: LambdaEvent<serde_json::Value>| async move {
            // Keep 2 s to report what is left as failed before Lambda's own deadline.
            let deadline = Deadline::from_epoch_ms(event.context.deadline, REPLY_MARGIN);
            Ok::<_, Error>(handler.handle_payload(event.payload, deadline).await?)
        },
    ))
    .await
}
