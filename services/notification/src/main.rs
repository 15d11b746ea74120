common::service_main!(notification::Application, notification::Config);
