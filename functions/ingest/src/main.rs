//! Lambda entry point: configuration, clients and the verifier are built once per cold start.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use telemetry_shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry_shared::logging::init_lambda();
    let config = ingest::Config::from_env(&Env::process())?;
    let sdk = telemetry_shared::aws::sdk_config().await?;
    let handler = ingest::from_config(&config, &sdk).await?;
    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Error>(handler.handle(&event.payload).await)
        },
    ))
    .await
}
