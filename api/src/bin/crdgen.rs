//! Prints nes's CRDs; `scripts/crdgen.sh` writes them to `manifests/crds.yaml`.

fn main() {
    match api::crd::crds_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(error) => {
            eprintln!("crdgen: cannot render the CRDs: {error}");
            std::process::exit(1);
        }
    }
}
