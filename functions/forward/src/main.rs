//! Lambda entry point: configuration and clients are built once per cold start.

use aws_lambda_events::kinesis::KinesisEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::time::Duration;

use telemetry_shared::config::Env;
use telemetry_shared::retry::Deadline;

const REPLY_MARGIN: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry_shared::logging::init_lambda();
    let config = forward::Config::from_env(&Env::process())?;
    let sdk = telemetry_shared::aws::sdk_config().await?;
    let handler = forward::from_config(&config, &sdk);
    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
            // Keep 2 s to report what is left as failed before Lambda's own deadline.
            let deadline = Deadline::from_epoch_ms(event.context.deadline, REPLY_MARGIN);
            Ok::<_, Error>(handler.handle(&event.payload, deadline).await)
        },
    ))
    .await
}
