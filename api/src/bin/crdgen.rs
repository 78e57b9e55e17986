//! Prints nes's CRDs, or with `--openapi` the socket API's OpenAPI document;
//! `scripts/crdgen.sh` writes both into the repository.

fn main() {
    let out = match std::env::args().nth(1).as_deref() {
        None => api::crd::crds_yaml().map_err(|e| e.to_string()),
        Some("--openapi") => Ok(api::openapi::render()),
        Some(other) => Err(format!(
            "unknown argument {other:?}; usage: crdgen [--openapi]"
        )),
    };
    match out {
        Ok(text) => print!("{text}"),
        Err(error) => {
            eprintln!("crdgen: {error}");
            std::process::exit(1);
        }
    }
}
