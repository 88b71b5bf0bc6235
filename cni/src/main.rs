//! The plugin binary a container runtime executes (installed as `router` in its CNI plugin
//! directory by `router cni install`).

fn main() {
    let mut stdin = String::new();
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let code = match std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin) {
        Ok(_) => cni::plugin::main(&env, &stdin, &mut std::io::stdout()),
        Err(e) => cni::plugin::fail(&mut std::io::stdout(), "1.0.0", &cni::plugin::CniError::io(format!("reading stdin: {e}"))),
    };
    std::process::exit(code);
}
