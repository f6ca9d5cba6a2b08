//! `kind: mongodb` against SecantusDB (MongoDB wire protocol).
