//! axum's extractors, with rejections rendered in our error formats instead of plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::Problem;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(status, "payload-too-large", "The request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Problem::new(status, "unsupported-media-type", "Send application/json")
            }
            _ => Problem::bad_request(r.body_text()),
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(_: PathRejection) -> Self {
        Problem::not_found()
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Problem::bad_request(r.body_text())
    }
}
