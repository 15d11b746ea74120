common::service_main!(converter::Application, converter::Config);
