//! Connecting to a name's addresses as RFC 8305 ("Happy Eyeballs")
//! clients do, for http checks.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a connection attempt has before the next address is tried
/// beside it (RFC 8305's "Connection Attempt Delay").
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

/// A connection to the first of `addrs` that takes one, as RFC 8305
/// ("Happy Eyeballs") has clients connect: the families alternate (the
/// resolver's first family first), and each next address is tried
/// [`NEXT_ADDRESS_AFTER`] after the one before, or as soon as that one
/// failed, while the earlier ones go on. Tried one after the other, an
/// address that drops connections (an unreachable IPv6 route, a load
/// balancer node gone) would take the check's whole timeout although the
/// service answers on the others, as the service's own clients find.
/// Otherwise the last failure, with its address.
pub async fn connect_first(addrs: &[SocketAddr]) -> Result<TcpStream, (SocketAddr, io::Error)> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let no_address = || io::Error::new(io::ErrorKind::NotFound, "no address");
    match addrs {
        [] => return Err((SocketAddr::from(([0, 0, 0, 0], 0)), no_address())),
        [one] => return TcpStream::connect(one).await.map_err(|e| (*one, e)),
        _ => {}
    }
    let attempt = |a: SocketAddr| async move { (a, TcpStream::connect(a).await) };
    let mut rest = interleaved(addrs).into_iter();
    let mut pending = FuturesUnordered::new();
    pending.extend(rest.next().map(attempt));
    let mut last = None;
    loop {
        let more = rest.len() > 0;
        tokio::select! {
            done = pending.next() => match done {
                Some((_, Ok(s))) => return Ok(s),
                Some((a, Err(e))) => {
                    last = Some((a, e));
                    pending.extend(rest.next().map(attempt));
                    if pending.is_empty() {
                        break;
                    }
                }
                None => break,
            },
            () = tokio::time::sleep(NEXT_ADDRESS_AFTER), if more => {
                pending.extend(rest.next().map(attempt));
            }
        }
    }
    Err(last.unwrap_or_else(|| (addrs[0], no_address())))
}

/// `addrs` with the two families alternating, the first address's family
/// first, each family in the resolver's order.
fn interleaved(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut a, mut b) = (
        addrs.iter().filter(|x| x.is_ipv6() == first_v6),
        addrs.iter().filter(|x| x.is_ipv6() != first_v6),
    );
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y).copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn addresses_alternate_families_from_the_first_one() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let list = [
            a("[2001:db8::1]:80"),
            a("[2001:db8::2]:80"),
            a("192.0.2.1:80"),
            a("[2001:db8::3]:80"),
            a("192.0.2.2:80"),
            a("192.0.2.3:80"),
        ];
        assert_eq!(
            interleaved(&list),
            [list[0], list[2], list[1], list[4], list[3], list[5]]
        );
        let v4_first = [list[2], list[0], list[4]];
        assert_eq!(interleaved(&v4_first), [list[2], list[0], list[4]]);
        assert_eq!(interleaved(&[list[2]]), [list[2]]);
    }

    /// A listener whose accept queue is full and never read: the kernel
    /// drops further connection attempts, which wait as at an address that
    /// drops them (a route gone, a firewall).
    async fn dropping() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = socket.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        // A backlog of 0 holds one; the rest only wait.
        while let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            held.push(s);
            assert!(held.len() < 8, "the accept queue never filled");
        }
        (l, held, addr)
    }

    #[tokio::test]
    async fn an_address_that_drops_connections_does_not_hide_the_next_one() {
        let (_l, _held, hole) = dropping().await;
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let t0 = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(5), connect_first(&[hole, good_addr]))
            .await
            .expect("connected before the timeout")
            .unwrap();
        assert_eq!(s.peer_addr().unwrap(), good_addr);
        let took = t0.elapsed();
        assert!(
            took >= NEXT_ADDRESS_AFTER && took < Duration::from_secs(2),
            "{took:?}"
        );

        // One that refuses is left at once for the next.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t0 = Instant::now();
        let s = connect_first(&[refused, good_addr]).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), good_addr);
        assert!(t0.elapsed() < NEXT_ADDRESS_AFTER, "{:?}", t0.elapsed());

        // None takes one: the last failure, with its address.
        match connect_first(&[refused, refused]).await {
            Err((a, e)) => {
                assert_eq!(a, refused);
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            }
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
