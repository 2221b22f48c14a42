//! A minimal HTTP/1.1 client over turmoil TCP: one request per connection,
//! the way a caller's retry after a replica crash opens a new one.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    /// The exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The connection ended before the answer.
    #[error("connection closed before the answer")]
    Closed,
}

/// POSTs `body` (JSON) to `http://host:port{path}` with `headers`; the
/// status and body of the answer.
pub async fn post_json(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, String), HttpError> {
    let stream = turmoil::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    let mut request = hyper::Request::post(path)
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, HttpError>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    tokio::pin!(connection);
    tokio::select! {
        biased;
        answer = exchange => answer,
        ended = &mut connection => match ended {
            Ok(()) => Err(HttpError::Closed),
            Err(err) => Err(err.into()),
        },
    }
}
