common::service_main!(gateway::Application, gateway::Config);
