"""What the classes are: their default names, the part each plays in counting, their colours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from segnet.core.errors import SegnetError

DEFAULT_CLASSES: tuple[str, ...] = ("background", "erythrocyte", "spirochete")
MIN_AREA = 30
"""Objects smaller than this many pixels are not counted (segnet.evaluate.counting; the CLI's --min-area default)."""


ROLES = ("background", "solid", "thin")
"""What a class is to counting: the background (not objects), solid objects (holes filled, opened
and touching objects split: red cells) or thin ones (specks dropped, measured along the
centreline: spirochetes). Other classes are counted as plain connected components."""


DEFAULT_CLASS_ROLES: dict[str, str] = {"background": "background", "erythrocyte": "solid", "spirochete": "thin"}
"""The darkfield roles, by class name; a config without ``class_roles`` gives them to the classes so named."""


@dataclass(frozen=True)
class ClassRoles:
    """Which class index plays which part in counting (:data:`ROLES`); every class but the background is counted."""

    num_classes: int
    background: int = 0
    solid: tuple[int, ...] = ()
    thin: tuple[int, ...] = ()

    @property
    def counted(self) -> list[int]:
        """The classes whose objects are counted: all but the background, in index order."""
        return [c for c in range(self.num_classes) if c != self.background]

    @classmethod
    def of(cls, class_names: Sequence[str], roles: Mapping[str, str] | None = None) -> ClassRoles:
        """The roles of ``class_names`` given by name in ``roles``; ``None``: :data:`DEFAULT_CLASS_ROLES`
        for the classes so named. Without a background class, class 0 is the background.

        Raises:
            SegnetError: ``roles`` names a class not in ``class_names`` or a role not in :data:`ROLES`,
                or gives two classes the background.
        """
        names = list(class_names)
        if roles is None:
            roles = {name: role for name, role in DEFAULT_CLASS_ROLES.items() if name in names}
        unknown = [name for name in roles if name not in names]
        if unknown:
            raise SegnetError(f"class_roles names classes that are not in classes: {unknown}")
        bad = sorted({role for role in roles.values() if role not in ROLES})
        if bad:
            raise SegnetError(f"class_roles gives unknown roles {bad} (use {', '.join(ROLES)})")
        by_role = {role: tuple(names.index(name) for name, given in roles.items() if given == role) for role in ROLES}
        if len(by_role["background"]) > 1:
            raise SegnetError(f"class_roles makes {len(by_role['background'])} classes the background; one at most")
        background = by_role["background"][0] if by_role["background"] else 0
        return cls(len(names), background, tuple(sorted(by_role["solid"])), tuple(sorted(by_role["thin"])))

    def by_name(self, class_names: Sequence[str]) -> dict[str, str]:
        """The roles as :meth:`of` takes them: each class that has one, by name (the background always)."""
        roles = {class_names[self.background]: "background"}
        roles.update({class_names[index]: "solid" for index in self.solid})
        roles.update({class_names[index]: "thin" for index in self.thin})
        return roles


DARKFIELD_ROLES = ClassRoles.of(DEFAULT_CLASSES)
"""The roles of the default classes: background 0, red cells (1) solid, spirochetes (2) thin."""
