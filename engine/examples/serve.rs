//! Exports a raw image over NBD on a unix socket, with a QMP monitor beside it, until a QMP
//! client sends `quit`:
//!
//! ```sh
//! cargo run --example serve -p blockmirror-engine -- disk.img /tmp/bm.sock /tmp/bm-qmp.sock
//! qemu-io -f raw -c 'write -P 7 0 1M' 'nbd+unix:///disk?socket=/tmp/bm.sock'
//! ```

use std::path::PathBuf;

use blockmirror_engine::serve::{ListenAddress, ServeConfig, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, socket, qmp] = args.as_slice() else {
        eprintln!("usage: serve SOURCE NBD_SOCKET QMP_SOCKET");
        std::process::exit(2);
    };
    let mut config = ServeConfig::new(
        PathBuf::from(source),
        "disk".into(),
        ListenAddress::Unix(socket.into()),
    );
    config.qmp = Some(PathBuf::from(qmp));
    let server = Server::start(config)?;
    eprintln!(
        "serving {} (QMP on {qmp}); send quit over QMP to stop",
        server.uri()
    );
    server.wait_quit(None);
    server.shutdown()?;
    Ok(())
}
