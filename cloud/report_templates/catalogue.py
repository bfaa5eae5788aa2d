"""Plain-language wording of the reports, and each alert category tied to IPA's guidance.

Every category maps to one of IPA's five basic security rules (情報セキュリティ5か条) and
one category of IPA's ten major threats to organisations (情報セキュリティ10大脅威 組織編),
so each recommended action tells the owner which rule it serves and which threat it
blunts. Texts are short sentences for a company owner with no security background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")

#: IPA's five basic rules, numbered as IPA numbers them.
RULES: dict[int, tuple[str, str]] = {
    1: ("OSやソフトウェアは常に最新の状態にしよう", "Keep the OS and software up to date"),
    2: ("ウイルス対策ソフトを導入しよう", "Use antivirus software"),
    3: ("パスワードを強化しよう", "Use strong passwords"),
    4: ("共有設定を見直そう", "Review sharing settings"),
    5: ("脅威や攻撃の手口を知ろう", "Know the threats and how attacks work"),
}

#: Categories of IPA's ten major threats (organisation edition) that alerts relate to.
THREATS: dict[str, tuple[str, str]] = {
    "ransomware": ("ランサムウェアによる被害", "Ransomware"),
    "supply_chain": ("サプライチェーンの弱点を悪用した攻撃", "Supply-chain attacks"),
    "targeted": ("標的型攻撃による機密情報の窃取", "Targeted attacks stealing confidential data"),
    "insider": ("内部不正による情報漏えい等", "Insider fraud and leaks"),
    "vulnerability": ("脆弱性を悪用した攻撃", "Exploitation of vulnerabilities"),
    "bec": ("ビジネスメール詐欺", "Business e-mail compromise"),
    "carelessness": ("不注意による情報漏えい等", "Leaks through carelessness"),
    "ddos": ("分散型サービス妨害攻撃（DDoS攻撃）", "Denial-of-service (DDoS) attacks"),
}


@dataclass(frozen=True)
class Guidance:
    """What an alert category means to an owner, and what to do about it."""

    rule: int  # key of RULES
    threat: str  # key of THREATS
    name: tuple[str, str]  # (ja, en): the category in plain words
    action: tuple[str, str]  # (ja, en): the one thing to do


# category          rule  threat          why this pairing
# scan              4     vulnerability   a sweep looks for open doors; closing shares shrinks them
# beacon            2     ransomware      regular calls home are how malware waits for orders
# bruteforce        3     targeted        password guessing is beaten by strong passwords
# dns_tunnel        2     targeted        data hidden in name lookups: malware stealing quietly
# lateral_movement  4     ransomware      spreading PC to PC is what ransomware does before it locks
# intel_match       5     targeted        a known-bad address: knowing the tricks avoids the trap
# malware_traffic   2     ransomware      traffic of known malware: antivirus removes it
# exfiltration      4     insider         large uploads out: check who may share what
# new_device        4     insider         an unknown device on the LAN: review who may connect
# exposure          4     vulnerability   a service open to the internet: review what is shared
# cleartext_creds   3     carelessness    passwords sent unencrypted can be read on the way
# old_os            1     vulnerability   unsupported systems get no security fixes
# gateway_offline   5     supply_chain    monitoring was down: attackers use blind spots
# sensor_offline    5     supply_chain    a sensor stopped reporting
# canary_touch      5     targeted        someone touched a decoy: an intruder is exploring
GUIDANCE: dict[str, Guidance] = {
    "scan": Guidance(4, "vulnerability", ("不審な機器探し（スキャン）", "Probing for devices (scan)"),
                     ("使っていない共有やポートを閉じましょう。", "Close shares and ports you do not use.")),
    "beacon": Guidance(2, "ransomware", ("定期的な不審通信", "Regular suspicious calls out"),
                       ("該当PCをウイルス対策ソフトで検査しましょう。",
                        "Scan the PC with antivirus software.")),
    "bruteforce": Guidance(3, "targeted", ("パスワードの総当たり", "Password guessing"),
                           ("長く推測されにくいパスワードに変え、使い回しをやめましょう。",
                            "Use long, unique passwords; never reuse them.")),
    "dns_tunnel": Guidance(2, "targeted", ("名前問い合わせに隠した通信", "Data hidden in name lookups"),
                           ("該当PCをウイルス対策ソフトで検査しましょう。",
                            "Scan the PC with antivirus software.")),
    "lateral_movement": Guidance(4, "ransomware", ("社内での感染拡大の兆候", "Spreading between PCs"),
                                 ("PC同士のファイル共有を必要最小限にしましょう。",
                                  "Limit file sharing between PCs to what is needed.")),
    "intel_match": Guidance(5, "targeted", ("危険と知られた相手との通信", "Contact with a known-bad address"),
                            ("不審なメールのリンクや添付を開かないよう社内で共有しましょう。",
                             "Remind staff not to open links or attachments in odd e-mails.")),
    "malware_traffic": Guidance(2, "ransomware", ("ウイルスの通信", "Malware traffic"),
                                ("ウイルス対策ソフトを入れ、定義ファイルを最新にしましょう。",
                                 "Install antivirus software and keep it updated.")),
    "exfiltration": Guidance(4, "insider", ("大量のデータ送信", "Large data sent out"),
                             ("誰がどのデータを外に出せるか見直しましょう。",
                              "Review who may send which data outside.")),
    "new_device": Guidance(4, "insider", ("新しい機器の接続", "A new device joined"),
                           ("見覚えのない機器がないか確認しましょう。",
                            "Check that you recognise every new device.")),
    "exposure": Guidance(4, "vulnerability", ("インターネットに公開された機器", "Device open to the internet"),
                         ("ルーターの転送設定を見直し、不要な公開をやめましょう。",
                          "Review router forwarding; stop exposing what is not needed.")),
    "cleartext_credentials": Guidance(3, "carelessness", ("暗号化されていないパスワード",
                                                          "Passwords sent unencrypted"),
                                      ("暗号化された接続（https等）に切り替えましょう。",
                                       "Switch to encrypted connections (https and the like).")),
    "old_os": Guidance(1, "vulnerability", ("サポートの切れた古いOS", "Outdated operating system"),
                       ("OSとソフトウェアを更新するか、機器を入れ替えましょう。",
                        "Update the OS and software, or replace the device.")),
    "gateway_offline": Guidance(5, "supply_chain", ("見守り装置の停止", "Monitoring box offline"),
                                ("見守り装置の電源とケーブルを確認しましょう。",
                                 "Check the monitoring box's power and cable.")),
    "sensor_offline": Guidance(5, "supply_chain", ("センサーの停止", "Sensor offline"),
                               ("センサーの電源と設置場所を確認しましょう。",
                                "Check the sensor's power and placement.")),
    "canary_touch": Guidance(5, "targeted", ("おとりへの接触", "Decoy touched"),
                             ("すぐにサポート窓口へ連絡してください。",
                              "Contact the support desk right away.")),
}  # fmt: skip

#: Used for a category this catalogue does not know yet (a newer gateway).
FALLBACK = Guidance(5, "targeted", ("その他の検知", "Other detections"),
                    ("内容をサポート窓口に確認しましょう。", "Ask the support desk what it means."))


def guidance(category: str) -> Guidance:
    """The guidance of ``category`` (a fallback for categories not listed)."""
    return GUIDANCE.get(category, FALLBACK)


SEVERITY_TEXT: dict[str, tuple[str, str]] = {
    "critical": ("緊急", "critical"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "info": ("参考", "info"),
}

STATUS_TEXT: dict[str, tuple[str, str]] = {
    "open": ("対応待ち", "waiting"),
    "acknowledged": ("確認済み・対応中", "seen, being handled"),
    "assigned": ("担当者が対応中", "assigned to staff"),
    "dispatched": ("駆け付け対応中", "on-site visit"),
    "resolved": ("解決済み", "resolved"),
}

OUTCOME_TEXT: dict[str, tuple[str, str]] = {
    "meets_star1_observed": ("★1相当（観測の範囲で）", "meets ★1 as far as seen"),
    "does_not_meet": ("★1を満たしていません", "does not meet ★1"),
    "insufficient_evidence": ("判定材料が不足", "not enough evidence"),
    "": ("未判定", "not assessed"),
}


def pick(pair: tuple[str, str], lang: Lang) -> str:
    """The ``lang`` half of a (ja, en) pair."""
    return pair[0] if lang == "ja" else pair[1]
