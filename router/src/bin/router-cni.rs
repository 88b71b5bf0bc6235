//! The plugin binary a container runtime executes (installed as `router` in its CNI plugin
//! directory by `router cni install`).

fn main() {
    cni::plugin::run_process()
}
