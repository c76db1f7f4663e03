"""The one error the nftables data plane raises."""


class NftError(RuntimeError):
    """nft refused (or did not finish) a transaction; the message carries nft's diagnostics."""
