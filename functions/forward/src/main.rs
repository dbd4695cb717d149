//! Lambda entry point: configuration and clients are built once per cold start.

use aws_lambda_events::kinesis::KinesisEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use telemetry_shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry_shared::logging::init_lambda();
    let config = forward::Config::from_env(&Env::process())?;
    let sdk = telemetry_shared::aws::sdk_config().await;
    let handler = forward::from_config(&config, &sdk);
    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
            Ok::<_, Error>(handler.handle(&event.payload).await)
        },
    ))
    .await
}
