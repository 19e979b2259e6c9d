"""The typed failure of the GOP alignment stage."""

from apa.errors import ApaError
from apa.schema import Stage


class AlignmentError(ApaError):
    """An utterance that cannot be aligned to its canonical phones. Reason codes:

    ======================  ===========================================================
    code                    when
    ======================  ===========================================================
    bad_input               no words, phones that do not follow the words, a word
                            without phones
    unknown_phone           a phone the acoustic model does not have
    too_short_for_phones    fewer frames than ``min_phone_frames`` x the phone count
                            (checked before decoding)
    failed                  the decoder found no path through all the phones, or failed
    ======================  ===========================================================
    """

    stage: Stage = "alignment"
