//! The in-process S3 server of the tests and the benchmark: s3s + s3s-fs behind a lock that makes
//! conditional puts atomic (s3s-fs checks then writes), with a switch that fails reads and writes
//! with 500s, and scripted error answers to PUTs of segment objects.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mainstay_storage_tiering::HttpStatusConnector;
use object_store::ObjectStore;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

/// What the server does with PUTs of segment objects (`.../segments/<collection>/<id>.seg`).
#[derive(Default)]
struct SegmentPuts {
    /// Per collection, the errors to answer to its next segment PUTs, in order; a PUT past its
    /// script is stored.
    scripts: HashMap<String, VecDeque<S3ErrorCode>>,
    /// Per collection, the errors to answer to its next segment GETs, in order.
    get_scripts: HashMap<String, VecDeque<S3ErrorCode>>,
    /// Segment PUTs received per collection.
    received: HashMap<String, u64>,
    /// The first `hold` segment PUTs wait at `barrier` until all of them have arrived.
    hold: usize,
    held: usize,
    barrier: Option<Arc<tokio::sync::Barrier>>,
}

/// The collection of a segment object's key.
fn segment_collection(key: &str) -> Option<String> {
    let (_, rest) = key.split_once("segments/")?;
    let (collection, _) = rest.split_once('/')?;
    Some(collection.to_owned())
}

/// s3s-fs behind a lock: its conditional puts are check-then-write, so they are serialised here.
struct Locked {
    fs: s3s_fs::FileSystem,
    lock: tokio::sync::Mutex<()>,
    fail: Arc<AtomicBool>,
    segment_puts: Arc<parking_lot::Mutex<SegmentPuts>>,
}

impl Locked {
    fn check(&self) -> S3Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(s3s::s3_error!(InternalError, "injected outage"));
        }
        Ok(())
    }

    /// Counts a segment PUT, holds it if asked, and answers its scripted error if any.
    async fn script(&self, key: &str) -> S3Result<()> {
        let Some(collection) = segment_collection(key) else {
            return Ok(());
        };
        let (answer, barrier) = {
            let mut puts = self.segment_puts.lock();
            *puts.received.entry(collection.clone()).or_default() += 1;
            let barrier = if puts.held < puts.hold {
                puts.held += 1;
                puts.barrier.clone()
            } else {
                None
            };
            let answer = puts
                .scripts
                .get_mut(&collection)
                .and_then(VecDeque::pop_front);
            (answer, barrier)
        };
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        match answer {
            Some(code) => Err(S3Error::with_message(code, "injected by the test")),
            None => Ok(()),
        }
    }

    /// Answers a segment GET's scripted error, if any.
    fn script_get(&self, key: &str) -> S3Result<()> {
        let Some(collection) = segment_collection(key) else {
            return Ok(());
        };
        let answer = self
            .segment_puts
            .lock()
            .get_scripts
            .get_mut(&collection)
            .and_then(VecDeque::pop_front);
        match answer {
            Some(code) => Err(S3Error::with_message(code, "injected by the test")),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl S3 for Locked {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.check()?;
        self.script_get(&req.input.key)?;
        self.fs.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.check()?;
        self.script(&req.input.key).await?;
        let _serialised = self.lock.lock().await;
        self.fs.put_object(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _serialised = self.lock.lock().await;
        self.fs.complete_multipart_upload(req).await
    }
}

/// A running in-process S3 server with bucket `test`.
pub(crate) struct S3Server {
    endpoint: String,
    fail: Arc<AtomicBool>,
    segment_puts: Arc<parking_lot::Mutex<SegmentPuts>>,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub(crate) async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("test")).unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let segment_puts = Arc::new(parking_lot::Mutex::new(SegmentPuts::default()));
        let locked = Locked {
            fs: s3s_fs::FileSystem::new(root.path()).unwrap(),
            lock: tokio::sync::Mutex::new(()),
            fail: fail.clone(),
            segment_puts: segment_puts.clone(),
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(locked);
        builder.set_auth(s3s::auth::SimpleAuth::from_single("access", "secret"));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                });
            }
        });
        Self {
            endpoint,
            fail,
            segment_puts,
            _root: root,
            task,
        }
    }

    /// object_store's S3 client for the server, built as the store builds its own (no client
    /// retries, statuses recorded for the classification of failed calls).
    pub(crate) fn client(&self) -> Arc<dyn ObjectStore> {
        let retry = object_store::RetryConfig {
            max_retries: 0,
            ..object_store::RetryConfig::default()
        };
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_bucket_name("test")
                .with_region("us-east-1")
                .with_access_key_id("access")
                .with_secret_access_key("secret")
                .with_retry(retry)
                .with_http_connector(HttpStatusConnector::default())
                .build()
                .unwrap(),
        )
    }

    #[allow(dead_code)] // The benchmark shares this file and injects no outage.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }
}

#[allow(dead_code)] // The benchmark shares this file and scripts no answers.
impl S3Server {
    /// Answers the next segment PUTs of `collection` with these errors, in order (s3s gives each
    /// code its S3 status: `InvalidRequest` 400, `SlowDown` 503, ...); later PUTs are stored.
    pub(crate) fn script_segment_puts(
        &self,
        collection: &str,
        errors: impl IntoIterator<Item = S3ErrorCode>,
    ) {
        self.segment_puts
            .lock()
            .scripts
            .entry(collection.to_owned())
            .or_default()
            .extend(errors);
    }

    /// Answers the next segment GETs of `collection` with these errors, in order.
    pub(crate) fn script_segment_gets(
        &self,
        collection: &str,
        errors: impl IntoIterator<Item = S3ErrorCode>,
    ) {
        self.segment_puts
            .lock()
            .get_scripts
            .entry(collection.to_owned())
            .or_default()
            .extend(errors);
    }

    /// Holds the next `puts` segment PUTs until all of them have arrived, so that they are in
    /// flight together and answered together.
    pub(crate) fn hold_segment_puts(&self, puts: usize) {
        let mut state = self.segment_puts.lock();
        state.hold = puts;
        state.held = 0;
        state.barrier = Some(Arc::new(tokio::sync::Barrier::new(puts)));
    }

    /// Segment PUTs of `collection` received so far, answered or not.
    pub(crate) fn segment_puts(&self, collection: &str) -> u64 {
        self.segment_puts
            .lock()
            .received
            .get(collection)
            .copied()
            .unwrap_or(0)
    }
}
