//! The PostgreSQL the tests use: a real server on 127.0.0.1:5432
//! (`scripts/test` installs and starts one where none runs), each test in a
//! schema of its own, and a cable that can be cut between a node and it.

use std::sync::Arc;

/// The database the PostgreSQL runs use (`WASM_EXEC_TEST_PG` overrides).
pub fn pg_url() -> String {
    std::env::var("WASM_EXEC_TEST_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A fresh schema of the test database, and the URL of a connection that
/// works in it.
pub async fn fresh_schema(prefix: &str) -> (String, String) {
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&pg_url())
        .await
        .expect("PostgreSQL must answer on 127.0.0.1:5432 for these tests (scripts/test starts it)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}?options=-c%20search_path%3D{schema}", pg_url());
    (schema, url)
}

/// Drops a schema made by [`fresh_schema`] once its test passed.
pub async fn drop_schema(schema: &str) {
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// A TCP proxy in front of the test database that can cut every
/// connection and refuse new ones, and let them through again: a database
/// outage as a node sees it, without stopping the server other tests use.
pub struct Cable {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cable {
    pub async fn to_postgres() -> Cable {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                links2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Cable { port, up, links }
    }

    /// `url` (of the test database) through this cable.
    pub fn carry(&self, url: &str) -> String {
        let through = url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        assert_ne!(
            through, url,
            "the test database must be at 127.0.0.1:5432 to cut its cable"
        );
        through
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn mend(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
